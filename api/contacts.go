package api

import (
	"context"
	"strings"

	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/storage"
)

// Bounds of the contacts namespace.
const (
	// searchLimitMax bounds contacts.search results per list.
	searchLimitMax = 100
	// searchLimitDefault is used when a client asks for 0.
	searchLimitDefault = 50
	// searchGlobalMin is the shortest query searched among all usernames;
	// shorter ones search the caller's contacts only, so the directory
	// cannot be listed a letter at a time.
	searchGlobalMin = 3
	// blockedLimitMax bounds one contacts.getBlocked page.
	blockedLimitMax = 100
)

var (
	errContactIDInvalid     = tgerr.New(400, "CONTACT_ID_INVALID")
	errUsernameNotOccupied  = tgerr.New(400, "USERNAME_NOT_OCCUPIED")
	errQueryTooShort        = tgerr.New(400, "QUERY_TOO_SHORT")
	errContactsListTooLarge = tgerr.New(400, "LIMIT_INVALID")
)

func (s *Service) registerContacts() {
	s.d.OnContactsImportContacts(s.contactsImportContacts)
	s.d.OnContactsGetContacts(s.contactsGetContacts)
	s.d.OnContactsDeleteContacts(s.contactsDeleteContacts)
	s.d.OnContactsResolveUsername(s.contactsResolveUsername)
	s.d.OnContactsSearch(s.contactsSearch)
	s.d.OnContactsBlock(s.contactsBlock)
	s.d.OnContactsUnblock(s.contactsUnblock)
	s.d.OnContactsGetBlocked(s.contactsGetBlocked)
}

// contactsImportContacts imports at most messaging.ImportMax entries per
// call; the rest come back in retry_contacts for the client to send again.
func (s *Service) contactsImportContacts(ctx context.Context, in []tg.InputPhoneContact) (*tg.ContactsImportedContacts, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	out := &tg.ContactsImportedContacts{Imported: []tg.ImportedContact{}, PopularInvites: []tg.PopularContact{}, RetryContacts: []int64{}}
	if len(in) > messaging.ImportMax {
		for _, c := range in[messaging.ImportMax:] {
			out.RetryContacts = append(out.RetryContacts, c.ClientID)
		}
		in = in[:messaging.ImportMax]
	}
	cmd := messaging.ImportContacts{Owner: uid, Contacts: make([]messaging.PhoneContact, len(in))}
	for i, c := range in {
		cmd.Contacts[i] = messaging.PhoneContact{ClientID: c.ClientID, Phone: c.Phone, FirstName: c.FirstName, LastName: c.LastName}
	}
	err = s.viewState(ctx, "contacts.importContacts", func(tx storage.Reader) error {
		cmd.Contacts, err = messaging.ResolvePhones(tx, cmd.Contacts)
		return err
	})
	if err != nil {
		return nil, err
	}
	res, err := s.applyCommand(ctx, "contacts.importContacts", cmd)
	if err != nil {
		return nil, err
	}
	r := res.(*messaging.ImportResult)
	out.RetryContacts = append(r.Retry, out.RetryContacts...)
	ids := make([]int64, len(r.Imported))
	for i, im := range r.Imported {
		out.Imported = append(out.Imported, tg.ImportedContact{UserID: im.UserID, ClientID: im.ClientID})
		ids[i] = im.UserID
	}
	err = s.viewState(ctx, "contacts.importContacts", func(tx storage.Reader) error {
		out.Users, err = s.usersFor(tx, uid, ids)
		return err
	})
	return out, err
}

// ContactsHash is the contacts.getContacts hash of a contact list: the
// usual vector hash (api/offsets#hash-generation) of saved_count, then the
// contacts' user ids in ascending order.
func ContactsHash(savedCount int, sortedIDs []int64) int64 {
	var h uint64
	mix := func(v uint64) {
		h ^= h >> 21
		h ^= h << 35
		h ^= h >> 4
		h += v
	}
	mix(uint64(savedCount))
	for _, id := range sortedIDs {
		mix(uint64(id))
	}
	return int64(h)
}

func (s *Service) contactsGetContacts(ctx context.Context, hash int64) (tg.ContactsContactsClass, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	var out *tg.ContactsContacts
	notModified := false
	err = s.viewState(ctx, "contacts.getContacts", func(tx storage.Reader) error {
		list, err := messaging.ListContacts(tx, uid)
		if err != nil {
			return err
		}
		ids := make([]int64, len(list)) // key order is id order
		for i, c := range list {
			ids[i] = c.UserID
		}
		if hash != 0 && ContactsHash(0, ids) == hash {
			notModified = true
			return nil
		}
		out = &tg.ContactsContacts{Contacts: make([]tg.Contact, len(list))}
		for i, c := range list {
			mutual, err := messaging.IsContact(tx, c.UserID, uid)
			if err != nil {
				return err
			}
			out.Contacts[i] = tg.Contact{UserID: c.UserID, Mutual: mutual}
		}
		out.Users, err = s.usersFor(tx, uid, ids)
		return err
	})
	if err != nil {
		return nil, err
	}
	if notModified {
		return &tg.ContactsContactsNotModified{}, nil
	}
	return out, nil
}

// contactUser resolves an InputUser naming a contact list entry.
func (s *Service) contactUser(tx storage.Reader, viewer int64, in tg.InputUserClass) (int64, error) {
	id, err := s.resolveUser(tx, viewer, in)
	if _, isRPC := tgerr.As(err); isRPC {
		return 0, errContactIDInvalid
	}
	return id, err
}

func (s *Service) contactsDeleteContacts(ctx context.Context, in []tg.InputUserClass) (tg.UpdatesClass, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	if len(in) > messaging.ImportMax {
		return nil, errContactsListTooLarge
	}
	ids := make([]int64, 0, len(in))
	err = s.viewState(ctx, "contacts.deleteContacts", func(tx storage.Reader) error {
		for _, iu := range in {
			id, err := s.contactUser(tx, uid, iu)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res, err := s.applyCommand(ctx, "contacts.deleteContacts", messaging.DeleteContacts{Owner: uid, IDs: ids})
	if err != nil {
		return nil, err
	}
	out := &tg.Updates{Updates: []tg.UpdateClass{}, Chats: []tg.ChatClass{}, Date: int(s.opts.Now().Unix())}
	err = s.viewState(ctx, "contacts.deleteContacts", func(tx storage.Reader) error {
		out.Users, err = s.usersFor(tx, uid, res.([]int64))
		return err
	})
	return out, err
}

func (s *Service) contactsResolveUsername(ctx context.Context, req *tg.ContactsResolveUsernameRequest) (*tg.ContactsResolvedPeer, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	if !messaging.ValidUsername(req.Username) {
		return nil, errUsernameInvalid
	}
	var out *tg.ContactsResolvedPeer
	err = s.viewState(ctx, "contacts.resolveUsername", func(tx storage.Reader) error {
		id, ok, err := messaging.UserByUsername(tx, req.Username)
		if err != nil {
			return err
		}
		if !ok {
			return errUsernameNotOccupied
		}
		u, err := s.userFor(tx, uid, id)
		if err != nil {
			return err
		}
		if u == nil {
			return errUsernameNotOccupied
		}
		out = &tg.ContactsResolvedPeer{Peer: &tg.PeerUser{UserID: id}, Chats: []tg.ChatClass{}, Users: []tg.UserClass{u}}
		return nil
	})
	return out, err
}

// contactsSearch finds the caller's contacts by a prefix of a name word or
// of the username (my_results), and other users by username prefix
// (results), each list at most the limit, itself at most searchLimitMax.
func (s *Service) contactsSearch(ctx context.Context, req *tg.ContactsSearchRequest) (*tg.ContactsFound, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	q := strings.ToLower(strings.TrimPrefix(strings.TrimSpace(req.Q), "@"))
	if q == "" {
		return nil, errQueryTooShort
	}
	limit := req.Limit
	if limit <= 0 {
		limit = searchLimitDefault
	}
	limit = min(limit, searchLimitMax)
	out := &tg.ContactsFound{MyResults: []tg.PeerClass{}, Results: []tg.PeerClass{}, Chats: []tg.ChatClass{}}
	err = s.viewState(ctx, "contacts.search", func(tx storage.Reader) error {
		var ids []int64
		mine := map[int64]bool{}
		list, err := messaging.ListContacts(tx, uid)
		if err != nil {
			return err
		}
		for _, c := range list {
			if len(out.MyResults) >= limit {
				break
			}
			u, ok, err := messaging.GetUser(tx, c.UserID)
			if err != nil {
				return err
			}
			if !ok || !matchesUser(q, u, &c) {
				continue
			}
			mine[u.ID] = true
			ids = append(ids, u.ID)
			out.MyResults = append(out.MyResults, &tg.PeerUser{UserID: u.ID})
		}
		if len(q) >= searchGlobalMin {
			// Over-fetch by the contacts found, which are skipped here.
			found, err := messaging.SearchUsernames(tx, q, limit+len(mine)+1)
			if err != nil {
				return err
			}
			for _, id := range found {
				if len(out.Results) >= limit {
					break
				}
				if mine[id] || id == uid {
					continue
				}
				ids = append(ids, id)
				out.Results = append(out.Results, &tg.PeerUser{UserID: id})
			}
		}
		out.Users, err = s.usersFor(tx, uid, ids)
		return err
	})
	return out, err
}

// matchesUser reports whether a word of the contact's names (saved or own)
// or the username starts with q (lower case).
func matchesUser(q string, u *messaging.User, c *messaging.Contact) bool {
	if strings.HasPrefix(strings.ToLower(u.Username), q) {
		return true
	}
	for _, name := range []string{c.FirstName, c.LastName, u.FirstName, u.LastName} {
		for _, w := range strings.Fields(strings.ToLower(name)) {
			if strings.HasPrefix(w, q) {
				return true
			}
		}
	}
	return false
}

// blockTarget resolves the peer of contacts.block/unblock. A wrong access
// hash is PEER_ID_INVALID (resolvePeer); chats and channels cannot be
// blocked here.
func (s *Service) blockTarget(ctx context.Context, method string, viewer int64, in tg.InputPeerClass) (int64, error) {
	var id int64
	err := s.viewState(ctx, method, func(tx storage.Reader) error {
		var err error
		id, err = s.resolvePeer(tx, viewer, in)
		return err
	})
	if err != nil {
		return 0, err
	}
	if id == viewer {
		return 0, errContactIDInvalid
	}
	return id, nil
}

func (s *Service) contactsBlock(ctx context.Context, req *tg.ContactsBlockRequest) (bool, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return false, err
	}
	other, err := s.blockTarget(ctx, "contacts.block", uid, req.ID)
	if err != nil {
		return false, err
	}
	if _, err := s.applyCommand(ctx, "contacts.block", messaging.Block{Owner: uid, Other: other, Auth: callFrom(ctx).PermKeyID}); err != nil {
		return false, err
	}
	return true, nil
}

func (s *Service) contactsUnblock(ctx context.Context, req *tg.ContactsUnblockRequest) (bool, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return false, err
	}
	other, err := s.blockTarget(ctx, "contacts.unblock", uid, req.ID)
	if err != nil {
		return false, err
	}
	if _, err := s.applyCommand(ctx, "contacts.unblock", messaging.Unblock{Owner: uid, Other: other, Auth: callFrom(ctx).PermKeyID}); err != nil {
		return false, err
	}
	return true, nil
}

// contactsGetBlocked pages the block list, newest first. A page that is
// the whole list is contacts.blocked, any other contacts.blockedSlice.
func (s *Service) contactsGetBlocked(ctx context.Context, req *tg.ContactsGetBlockedRequest) (tg.ContactsBlockedClass, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	limit := req.Limit
	if limit <= 0 || limit > blockedLimitMax {
		limit = blockedLimitMax
	}
	offset := max(req.Offset, 0)
	var (
		page  []messaging.Blocked
		total int
		users []tg.UserClass
	)
	err = s.viewState(ctx, "contacts.getBlocked", func(tx storage.Reader) error {
		var err error
		page, total, err = messaging.ListBlocked(tx, uid, offset, limit)
		if err != nil {
			return err
		}
		ids := make([]int64, len(page))
		for i, b := range page {
			ids[i] = b.UserID
		}
		users, err = s.usersFor(tx, uid, ids)
		return err
	})
	if err != nil {
		return nil, err
	}
	blocked := make([]tg.PeerBlocked, len(page))
	for i, b := range page {
		blocked[i] = tg.PeerBlocked{PeerID: &tg.PeerUser{UserID: b.UserID}, Date: int(b.Date)}
	}
	if offset == 0 && len(page) == total {
		return &tg.ContactsBlocked{Blocked: blocked, Chats: []tg.ChatClass{}, Users: users}, nil
	}
	return &tg.ContactsBlockedSlice{Count: total, Blocked: blocked, Chats: []tg.ChatClass{}, Users: users}, nil
}
