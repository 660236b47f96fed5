package api

func (s *Service) registerContacts() {}
