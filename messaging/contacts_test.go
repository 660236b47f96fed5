package messaging

import (
	"context"
	"testing"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/storage"
)

func TestImportAndDeleteContacts(t *testing.T) {
	m, _ := openMachine(t, nil)
	a := signUp(t, m, "9996610001", "Ann", 1, 100)
	b := signUp(t, m, "9996610002", "Bob", 2, 100)
	resolve := func(in []PhoneContact) []PhoneContact {
		t.Helper()
		var out []PhoneContact
		if err := m.View(func(tx storage.Reader) (err error) {
			out, err = ResolvePhones(tx, in)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	res := apply[*ImportResult](t, m, ImportContacts{Owner: a.ID, Contacts: resolve([]PhoneContact{
		{ClientID: 1, Phone: "+999 661 0002", FirstName: "Bobby"},
		{ClientID: 2, Phone: "9996610001"}, // herself
		{ClientID: 3, Phone: "15550100000"},
		{ClientID: 4, Phone: "not a phone"},
	})}, envAt(200, 0))
	if len(res.Imported) != 1 || res.Imported[0] != (ImportedContact{UserID: b.ID, ClientID: 1}) || len(res.Retry) != 0 {
		t.Fatalf("import: %+v", res)
	}
	// Importing again renames and does not count twice.
	apply[*ImportResult](t, m, ImportContacts{Owner: a.ID, Contacts: resolve([]PhoneContact{{ClientID: 9, Phone: b.Phone, FirstName: "B"}})}, envAt(300, 0))
	_ = m.View(func(tx storage.Reader) error {
		cs, err := ListContacts(tx, a.ID)
		if err != nil || len(cs) != 1 || cs[0].UserID != b.ID || cs[0].FirstName != "B" || cs[0].Date != 200 {
			t.Errorf("contacts %+v, %v", cs, err)
		}
		if n, _ := contactCount(tx, a.ID); n != 1 {
			t.Errorf("count %d", n)
		}
		if ok, _ := IsContact(tx, b.ID, a.ID); ok {
			t.Error("contact is not symmetric")
		}
		return nil
	})
	if out := apply[[]int64](t, m, DeleteContacts{Owner: a.ID, IDs: []int64{b.ID, a.ID, 12345}}, envAt(400, 0)); len(out) != 1 || out[0] != b.ID {
		t.Fatalf("deleted %v", out)
	}
	_ = m.View(func(tx storage.Reader) error {
		if ok, _ := IsContact(tx, a.ID, b.ID); ok {
			t.Error("still a contact")
		}
		if n, _ := contactCount(tx, a.ID); n != 0 {
			t.Errorf("count %d", n)
		}
		return nil
	})
}

func TestImportBounded(t *testing.T) {
	m, _ := openMachine(t, nil)
	many := make([]PhoneContact, ImportMax+1)
	if _, err := m.Apply(context.Background(), ImportContacts{Owner: 1, Contacts: many}, envAt(1, 0)); err == nil {
		t.Fatal("oversized import accepted")
	}
}

func TestBlockList(t *testing.T) {
	rec := &recordNotifier{}
	m, _ := openMachine(t, rec)
	ctx := context.Background()
	a := signUp(t, m, "9996610001", "Ann", 1, 100)
	var others []int64
	for i := int64(2); i <= 5; i++ {
		others = append(others, signUp(t, m, "999661000"+string(rune('0'+i)), "U", i, 100).ID)
	}
	if _, err := m.Apply(ctx, Block{Owner: a.ID, Other: a.ID}, envAt(200, 0)); rpcType(err) != "CONTACT_ID_INVALID" {
		t.Fatalf("block self: %v", err)
	}
	for i, o := range others {
		if !apply[bool](t, m, Block{Owner: a.ID, Other: o, Auth: 1}, envAt(200+int64(i), 0)) {
			t.Fatal("block")
		}
	}
	if apply[bool](t, m, Block{Owner: a.ID, Other: others[0], Auth: 1}, envAt(300, 0)) {
		t.Fatal("second block changed something")
	}
	// The owner's other devices were told.
	if len(rec.events) != 4 || rec.events[0].UserID != a.ID || rec.events[0].ExceptAuth != 1 || rec.events[0].Pts != 0 {
		t.Fatalf("events %+v", rec.events)
	}
	upd, err := tg.DecodeUpdate(&bin.Buffer{Buf: rec.events[0].Update})
	if pb, ok := upd.(*tg.UpdatePeerBlocked); err != nil || !ok || !pb.Blocked || pb.PeerID.(*tg.PeerUser).UserID != others[0] {
		t.Fatalf("update %v, %v", upd, err)
	}
	if !apply[bool](t, m, Unblock{Owner: a.ID, Other: others[1]}, envAt(301, 0)) || apply[bool](t, m, Unblock{Owner: a.ID, Other: others[1]}, envAt(302, 0)) {
		t.Fatal("unblock")
	}
	_ = m.View(func(tx storage.Reader) error {
		for i, o := range others {
			if blocked, _ := IsBlocked(tx, a.ID, o); blocked != (i != 1) {
				t.Errorf("IsBlocked(%d) = %v", i, blocked)
			}
			if blocked, _ := IsBlocked(tx, o, a.ID); blocked {
				t.Error("block is not symmetric")
			}
		}
		// Newest first, paged.
		page, n, err := ListBlocked(tx, a.ID, 0, 2)
		if err != nil || n != 3 || len(page) != 2 || page[0].UserID != others[3] || page[1].UserID != others[2] || page[0].Date != 203 {
			t.Errorf("page 1: %+v, %d, %v", page, n, err)
		}
		page, _, _ = ListBlocked(tx, a.ID, 2, 2)
		if len(page) != 1 || page[0].UserID != others[0] {
			t.Errorf("page 2: %+v", page)
		}
		if page, _, _ = ListBlocked(tx, a.ID, 3, 2); len(page) != 0 {
			t.Errorf("past the end: %+v", page)
		}
		return nil
	})
}
