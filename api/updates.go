package api

func (s *Service) registerUpdates() {}
