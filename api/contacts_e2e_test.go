package api_test

import (
	"testing"
	"time"

	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/api"
)

// waitUpdate waits for a pushed update that match accepts.
func waitUpdate(t *testing.T, p *peer, match func(tg.UpdateClass) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case u := <-p.updates:
			var list []tg.UpdateClass
			switch u := u.(type) {
			case *tg.Updates:
				list = u.Updates
			case *tg.UpdateShort:
				list = []tg.UpdateClass{u.Update}
			}
			for _, upd := range list {
				if match(upd) {
					return
				}
			}
		case <-deadline:
			t.Fatal("no matching update pushed")
		}
	}
}

// importOne imports phone into p's contacts and returns the user as p
// sees it.
func importOne(t *testing.T, p *peer, phone, first string) *tg.User {
	t.Helper()
	res, err := p.api.ContactsImportContacts(testCtx(t), []tg.InputPhoneContact{{ClientID: 42, Phone: phone, FirstName: first}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Imported) != 1 || res.Imported[0].ClientID != 42 || len(res.Users) != 1 {
		t.Fatalf("import %s: %+v", phone, res)
	}
	u := res.Users[0].(*tg.User)
	if u.ID != res.Imported[0].UserID {
		t.Fatalf("import %s: %+v", phone, res)
	}
	return u
}

// testContacts runs three signed-up users, A on two devices, through
// contacts, per-viewer access hashes, usernames, search, profiles and the
// block list. Part of TestAccountsEndToEnd.
func testContacts(t *testing.T, a1, a2, b, c *peer) {
	ctx := testCtx(t)

	// A imports B by phone and sees B with A's access hash.
	res, err := a1.api.ContactsImportContacts(ctx, []tg.InputPhoneContact{
		{ClientID: 1, Phone: "+" + b.self.Phone, FirstName: "Bobby"},
		{ClientID: 2, Phone: "15550199999", FirstName: "Nobody"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Imported) != 1 || res.Imported[0].UserID != b.self.ID || res.Imported[0].ClientID != 1 || len(res.Users) != 1 {
		t.Fatalf("import: %+v", res)
	}
	bByA := res.Users[0].(*tg.User)
	if bByA.AccessHash == 0 || !bByA.Contact || bByA.MutualContact || bByA.Phone != b.self.Phone || bByA.FirstName != "Bobby" {
		t.Fatalf("B as A sees it: %+v", bByA)
	}

	t.Run("contact list", func(t *testing.T) {
		ctx := testCtx(t)
		got, err := a1.api.ContactsGetContacts(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		list, ok := got.(*tg.ContactsContacts)
		if !ok || len(list.Contacts) != 1 || list.Contacts[0].UserID != b.self.ID || list.Contacts[0].Mutual || len(list.Users) != 1 {
			t.Fatalf("contacts: %+v", got)
		}
		hash := api.ContactsHash(0, []int64{b.self.ID})
		if got, err := a1.api.ContactsGetContacts(ctx, hash); err != nil {
			t.Fatal(err)
		} else if _, ok := got.(*tg.ContactsContactsNotModified); !ok {
			t.Fatalf("same hash: %T", got)
		}
		// B adds A back: the contact is mutual for both.
		aByB := importOne(t, b, a1.self.Phone, "")
		if !aByB.MutualContact || aByB.FirstName != "Test" {
			t.Fatalf("A as B sees it: %+v", aByB)
		}
		got, _ = a1.api.ContactsGetContacts(ctx, 0)
		if list := got.(*tg.ContactsContacts); !list.Contacts[0].Mutual || !list.Users[0].(*tg.User).MutualContact {
			t.Fatalf("not mutual: %+v", list)
		}
	})

	t.Run("access hashes", func(t *testing.T) {
		ctx := testCtx(t)
		// The hash A holds works for A.
		full, err := a1.api.UsersGetFullUser(ctx, &tg.InputUser{UserID: b.self.ID, AccessHash: bByA.AccessHash})
		if err != nil || full.FullUser.ID != b.self.ID || full.FullUser.Blocked {
			t.Fatalf("full user: %+v, %v", full, err)
		}
		// A forged hash, and A's hash in C's hands, name nobody.
		forged := &tg.InputPeerUser{UserID: b.self.ID, AccessHash: bByA.AccessHash + 1}
		_, err = a1.api.ContactsBlock(ctx, &tg.ContactsBlockRequest{ID: forged})
		wantRPC(t, "block with forged hash", err, 400, "PEER_ID_INVALID")
		_, err = c.api.UsersGetFullUser(ctx, &tg.InputUser{UserID: b.self.ID, AccessHash: bByA.AccessHash})
		wantRPC(t, "someone else's hash", err, 400, "USER_ID_INVALID")
		users, err := c.api.UsersGetUsers(ctx, []tg.InputUserClass{&tg.InputUser{UserID: b.self.ID, AccessHash: bByA.AccessHash}, &tg.InputUserSelf{}})
		if err != nil || len(users) != 1 || users[0].(*tg.User).ID != c.self.ID {
			t.Fatalf("get users with a bad hash: %+v, %v", users, err)
		}
		// Nothing changed.
		blocked, err := a1.api.ContactsGetBlocked(ctx, &tg.ContactsGetBlockedRequest{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if bl, ok := blocked.(*tg.ContactsBlocked); !ok || len(bl.Blocked) != 0 {
			t.Fatalf("blocked after a forged call: %+v", blocked)
		}
	})

	t.Run("usernames", func(t *testing.T) {
		ctx := testCtx(t)
		u, err := a1.api.AccountUpdateUsername(ctx, "alice_e2e")
		if err != nil || u.(*tg.User).Username != "alice_e2e" {
			t.Fatalf("set username: %+v, %v", u, err)
		}
		// A's other device hears of it.
		waitUpdate(t, a2, func(u tg.UpdateClass) bool {
			un, ok := u.(*tg.UpdateUserName)
			return ok && un.UserID == a1.self.ID && len(un.Usernames) == 1 && un.Usernames[0].Username == "alice_e2e"
		})
		_, err = a1.api.AccountUpdateUsername(ctx, "alice_e2e")
		wantRPC(t, "same username", err, 400, "USERNAME_NOT_MODIFIED")
		_, err = b.api.AccountUpdateUsername(ctx, "Alice_E2E")
		wantRPC(t, "taken username", err, 400, "USERNAME_OCCUPIED")
		_, err = b.api.AccountUpdateUsername(ctx, "4bad")
		wantRPC(t, "bad username", err, 400, "USERNAME_INVALID")
		if free, err := b.api.AccountCheckUsername(ctx, "alice_e2e"); err != nil || free {
			t.Fatalf("check taken: %v, %v", free, err)
		}
		if free, err := b.api.AccountCheckUsername(ctx, "bob_e2e"); err != nil || !free {
			t.Fatalf("check free: %v, %v", free, err)
		}

		// C resolves A and gets its own access hash for A.
		r, err := c.api.ContactsResolveUsername(ctx, &tg.ContactsResolveUsernameRequest{Username: "ALICE_e2e"})
		if err != nil {
			t.Fatal(err)
		}
		aByC := r.Users[0].(*tg.User)
		if r.Peer.(*tg.PeerUser).UserID != a1.self.ID || aByC.ID != a1.self.ID || aByC.Phone != "" || aByC.Contact {
			t.Fatalf("resolved %+v", r)
		}
		if _, err := c.api.UsersGetFullUser(ctx, &tg.InputUser{UserID: a1.self.ID, AccessHash: aByC.AccessHash}); err != nil {
			t.Fatalf("resolved hash: %v", err)
		}
		_, err = c.api.ContactsResolveUsername(ctx, &tg.ContactsResolveUsernameRequest{Username: "nobody_e2e"})
		wantRPC(t, "unknown username", err, 400, "USERNAME_NOT_OCCUPIED")

		// Search: usernames for everyone, names among one's contacts.
		found, err := c.api.ContactsSearch(ctx, &tg.ContactsSearchRequest{Q: "@ali", Limit: 10})
		if err != nil || len(found.Results) != 1 || found.Results[0].(*tg.PeerUser).UserID != a1.self.ID || len(found.MyResults) != 0 || len(found.Users) != 1 {
			t.Fatalf("search ali: %+v, %v", found, err)
		}
		found, err = a1.api.ContactsSearch(ctx, &tg.ContactsSearchRequest{Q: "bob", Limit: 1000})
		if err != nil || len(found.MyResults) != 1 || found.MyResults[0].(*tg.PeerUser).UserID != b.self.ID || len(found.Results) != 0 {
			t.Fatalf("search bob: %+v, %v", found, err)
		}
		_, err = a1.api.ContactsSearch(ctx, &tg.ContactsSearchRequest{Q: " ", Limit: 10})
		wantRPC(t, "empty search", err, 400, "QUERY_TOO_SHORT")
	})

	t.Run("profile", func(t *testing.T) {
		ctx := testCtx(t)
		req := &tg.AccountUpdateProfileRequest{}
		req.SetAbout("hello")
		req.SetLastName("Smith")
		if _, err := a1.api.AccountUpdateProfile(ctx, req); err != nil {
			t.Fatal(err)
		}
		aByB := importOne(t, b, a1.self.Phone, "")
		full, err := b.api.UsersGetFullUser(ctx, &tg.InputUser{UserID: a1.self.ID, AccessHash: aByB.AccessHash})
		if err != nil || full.FullUser.About != "hello" || full.Users[0].(*tg.User).LastName != "Smith" {
			t.Fatalf("full user: %+v, %v", full, err)
		}
		bad := &tg.AccountUpdateProfileRequest{}
		bad.SetFirstName("")
		_, err = a1.api.AccountUpdateProfile(ctx, bad)
		wantRPC(t, "empty first name", err, 400, "FIRSTNAME_INVALID")
	})

	t.Run("block list", func(t *testing.T) {
		ctx := testCtx(t)
		cByA := importOne(t, a1, c.self.Phone, "Carl")
		for _, u := range []*tg.User{bByA, cByA} {
			ok, err := a1.api.ContactsBlock(ctx, &tg.ContactsBlockRequest{ID: &tg.InputPeerUser{UserID: u.ID, AccessHash: u.AccessHash}})
			if err != nil || !ok {
				t.Fatalf("block: %v, %v", ok, err)
			}
		}
		waitUpdate(t, a2, func(u tg.UpdateClass) bool {
			pb, ok := u.(*tg.UpdatePeerBlocked)
			return ok && pb.Blocked && pb.PeerID.(*tg.PeerUser).UserID == b.self.ID
		})
		_, err := a1.api.ContactsBlock(ctx, &tg.ContactsBlockRequest{ID: &tg.InputPeerSelf{}})
		wantRPC(t, "block self", err, 400, "CONTACT_ID_INVALID")
		full, err := a1.api.UsersGetFullUser(ctx, &tg.InputUser{UserID: b.self.ID, AccessHash: bByA.AccessHash})
		if err != nil || !full.FullUser.Blocked {
			t.Fatalf("full user of a blocked user: %+v, %v", full, err)
		}

		// Newest first, one per page.
		for i, want := range []int64{c.self.ID, b.self.ID} {
			got, err := a1.api.ContactsGetBlocked(ctx, &tg.ContactsGetBlockedRequest{Offset: i, Limit: 1})
			if err != nil {
				t.Fatal(err)
			}
			page, ok := got.(*tg.ContactsBlockedSlice)
			if !ok || page.Count != 2 || len(page.Blocked) != 1 || page.Blocked[0].PeerID.(*tg.PeerUser).UserID != want || len(page.Users) != 1 || page.Blocked[0].Date == 0 {
				t.Fatalf("page %d: %+v", i, got)
			}
		}
		if ok, err := a1.api.ContactsUnblock(ctx, &tg.ContactsUnblockRequest{ID: &tg.InputPeerUser{UserID: b.self.ID, AccessHash: bByA.AccessHash}}); err != nil || !ok {
			t.Fatalf("unblock: %v, %v", ok, err)
		}
		waitUpdate(t, a2, func(u tg.UpdateClass) bool {
			pb, ok := u.(*tg.UpdatePeerBlocked)
			return ok && !pb.Blocked && pb.PeerID.(*tg.PeerUser).UserID == b.self.ID
		})
		got, err := a1.api.ContactsGetBlocked(ctx, &tg.ContactsGetBlockedRequest{Limit: 100})
		if all, ok := got.(*tg.ContactsBlocked); err != nil || !ok || len(all.Blocked) != 1 || all.Blocked[0].PeerID.(*tg.PeerUser).UserID != c.self.ID {
			t.Fatalf("after unblock: %+v, %v", got, err)
		}
	})

	t.Run("delete contacts", func(t *testing.T) {
		ctx := testCtx(t)
		_, err := a1.api.ContactsDeleteContacts(ctx, []tg.InputUserClass{&tg.InputUser{UserID: b.self.ID, AccessHash: 1}})
		wantRPC(t, "delete with a bad hash", err, 400, "CONTACT_ID_INVALID")
		upd, err := a1.api.ContactsDeleteContacts(ctx, []tg.InputUserClass{&tg.InputUser{UserID: b.self.ID, AccessHash: bByA.AccessHash}})
		if err != nil {
			t.Fatal(err)
		}
		if u := upd.(*tg.Updates); len(u.Users) != 1 || u.Users[0].(*tg.User).Contact {
			t.Fatalf("delete: %+v", upd)
		}
		got, _ := a1.api.ContactsGetContacts(ctx, 0)
		for _, ct := range got.(*tg.ContactsContacts).Contacts {
			if ct.UserID == b.self.ID {
				t.Fatal("deleted contact still listed")
			}
		}
	})
}
