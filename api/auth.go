package api

func (s *Service) registerAuth() {}
