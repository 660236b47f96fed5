package api

func (s *Service) registerAccount() {}
