package messaging

import (
	"context"
	"strings"
	"testing"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/storage"
)

func TestValidUsername(t *testing.T) {
	for s, want := range map[string]bool{
		"alice":                   true,
		"Alice_2":                 true,
		"a1234":                   true,
		"abcd":                    false, // short
		"1alice":                  false,
		"_alice":                  false,
		"ali-ce":                  false,
		"alicé":                   false,
		strings.Repeat("a", 32):   true,
		strings.Repeat("a", 33):   false,
		"":                        false,
		"alice bob":               false,
		"ALICE_IN_WONDERLAND_123": true,
	} {
		if got := ValidUsername(s); got != want {
			t.Errorf("ValidUsername(%q) = %v", s, got)
		}
	}
}

func TestUpdateUsername(t *testing.T) {
	rec := &recordNotifier{}
	m, _ := openMachine(t, rec)
	ctx := context.Background()
	a := signUp(t, m, "9996610001", "Ann", 1, 100)
	b := signUp(t, m, "9996610002", "Bob", 2, 100)

	u := apply[*User](t, m, UpdateUsername{UserID: a.ID, Username: "Annie", Auth: 1}, envAt(200, 0))
	if u.Username != "Annie" {
		t.Fatalf("user %+v", u)
	}
	for _, tc := range []struct{ name, want string }{
		{"annie", "USERNAME_OCCUPIED"}, // case-insensitive
		{"bad-name", "USERNAME_INVALID"},
	} {
		if _, err := m.Apply(ctx, UpdateUsername{UserID: b.ID, Username: tc.name}, envAt(201, 0)); rpcType(err) != tc.want {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
	}
	if _, err := m.Apply(ctx, UpdateUsername{UserID: a.ID, Username: "Annie"}, envAt(201, 0)); rpcType(err) != "USERNAME_NOT_MODIFIED" {
		t.Errorf("same name: %v", err)
	}
	// Renaming frees the old name.
	apply[*User](t, m, UpdateUsername{UserID: a.ID, Username: "ann_lee"}, envAt(202, 0))
	apply[*User](t, m, UpdateUsername{UserID: b.ID, Username: "annie"}, envAt(203, 0))
	_ = m.View(func(tx storage.Reader) error {
		if id, ok, _ := UserByUsername(tx, "ANNIE"); !ok || id != b.ID {
			t.Errorf("annie → %d, %v", id, ok)
		}
		ids, err := SearchUsernames(tx, "ann", 10)
		if err != nil || len(ids) != 2 || ids[0] != a.ID || ids[1] != b.ID {
			t.Errorf("search: %v, %v", ids, err)
		}
		if ids, _ := SearchUsernames(tx, "ann", 1); len(ids) != 1 {
			t.Errorf("limit: %v", ids)
		}
		return nil
	})
	// Removing.
	apply[*User](t, m, UpdateUsername{UserID: a.ID, Username: ""}, envAt(204, 0))
	_ = m.View(func(tx storage.Reader) error {
		if _, ok, _ := UserByUsername(tx, "ann_lee"); ok {
			t.Error("removed username still resolves")
		}
		return nil
	})
	ev := rec.events[0]
	upd, err := tg.DecodeUpdate(&bin.Buffer{Buf: ev.Update})
	if un, ok := upd.(*tg.UpdateUserName); err != nil || !ok || ev.UserID != a.ID || ev.ExceptAuth != 1 || un.Usernames[0].Username != "Annie" {
		t.Fatalf("event %+v: %v, %v", ev, upd, err)
	}
}

func TestUpdateProfile(t *testing.T) {
	m, _ := openMachine(t, nil)
	ctx := context.Background()
	a := signUp(t, m, "9996610001", "Ann", 1, 100)
	str := func(s string) *string { return &s }
	u := apply[*User](t, m, UpdateProfile{UserID: a.ID, LastName: str("Lee"), About: str(" hi ")}, envAt(200, 0))
	if u.FirstName != "Ann" || u.LastName != "Lee" || u.About != "hi" {
		t.Fatalf("user %+v", u)
	}
	if _, err := m.Apply(ctx, UpdateProfile{UserID: a.ID, FirstName: str("")}, envAt(201, 0)); rpcType(err) != "FIRSTNAME_INVALID" {
		t.Errorf("empty first name: %v", err)
	}
	if _, err := m.Apply(ctx, UpdateProfile{UserID: a.ID, About: str(strings.Repeat("x", AboutLengthMax+1))}, envAt(201, 0)); rpcType(err) != "ABOUT_TOO_LONG" {
		t.Errorf("long about: %v", err)
	}
	if _, err := m.Apply(ctx, UpdateProfile{UserID: a.ID, LastName: str(strings.Repeat("é", NameLengthMax+1))}, envAt(201, 0)); rpcType(err) != "LASTNAME_INVALID" {
		t.Errorf("long last name: %v", err)
	}
	_ = m.View(func(tx storage.Reader) error {
		got, _, _ := GetUser(tx, a.ID)
		if got.LastName != "Lee" || got.About != "hi" {
			t.Errorf("stored %+v", got)
		}
		return nil
	})
}
