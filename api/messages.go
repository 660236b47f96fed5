package api

func (s *Service) registerMessages() {}
