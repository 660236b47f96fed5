package api

func (s *Service) registerUsers() {}
