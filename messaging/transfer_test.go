package messaging

import (
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/storage"
)

// TestAuthorizationTransfer exports a DC2 user's authorization, imports
// it for a DC1 key, and ends it at home: the revocation reaches DC1 as a
// RevokeGuest step in DC2's outbox for DC1.
func TestAuthorizationTransfer(t *testing.T) {
	uid := UserID(2, 7)
	home := newShardedDCAt(t, 2, map[int64]int{})
	away := newShardedDCAt(t, 1, map[int64]int{})
	tx := home.tables[home.l.DirGroup()].Begin()
	if err := PutUser(&tx.Txn, &User{ID: uid, Phone: "9996627777", FirstName: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	token := sha256.Sum256([]byte("token"))
	if _, err := home.apply(ExportAuthorization{UserID: uid, DC: 1, TokenHash: token[:]}, envAt(100, 2)); err != nil {
		t.Fatal(err)
	}
	const key = 77
	imp := ImportAuthorization{UserID: uid, TokenHash: token[:], KeyDC: 1, PermKeyID: key}
	wrongHash := sha256.Sum256([]byte("other"))
	bad := []struct {
		name string
		cmd  ImportAuthorization
		now  int64
	}{
		{"another token", ImportAuthorization{UserID: uid, TokenHash: wrongHash[:], KeyDC: 1, PermKeyID: key}, 101},
		{"a key of another DC", ImportAuthorization{UserID: uid, TokenHash: token[:], KeyDC: 3, PermKeyID: key}, 101},
		{"another user", ImportAuthorization{UserID: UserID(2, 8), TokenHash: token[:], KeyDC: 1, PermKeyID: key}, 101},
		{"after it expired", imp, 100 + ExportTTL},
	}
	for _, b := range bad {
		_, err := home.apply(b.cmd, envAt(b.now, 3))
		if !errors.Is(err, ErrRejected) || !tgerr.Is(err, "AUTH_BYTES_INVALID") {
			t.Errorf("import with %s: %v, want AUTH_BYTES_INVALID", b.name, err)
		}
	}
	a, err := home.apply(imp, envAt(101, 4))
	if err != nil {
		t.Fatal(err)
	}
	if u, ok := a.Result.(*User); !ok || u.ID != uid {
		t.Fatalf("import answered %v, want the user", a.Result)
	}
	if _, err := home.apply(imp, envAt(102, 5)); !tgerr.Is(err, "AUTH_BYTES_INVALID") {
		t.Errorf("a token imported twice: %v, want AUTH_BYTES_INVALID", err)
	}
	var got *Authorization
	home.view(home.l.DirGroup(), func(tx *storage.Txn) {
		got, _, err = GetAuthorization(tx, key)
	})
	if err != nil || got == nil || got.UserID != uid || got.KeyDC != 1 {
		t.Fatalf("home's authorization of the imported key: %+v, %v", got, err)
	}

	// The key's own DC signs it in as the guest.
	if _, err := away.apply(GuestAuthorization{UserID: uid, PermKeyID: key}, envAt(101, 6)); err != nil {
		t.Fatal(err)
	}
	if _, err := away.apply(GuestAuthorization{UserID: UserID(1, 3), PermKeyID: key + 1}, envAt(101, 6)); err == nil {
		t.Error("a guest authorization for a user of this DC was accepted")
	}

	// Ended at home, it leaves a RevokeGuest step for DC1.
	if _, err := home.apply(ResetAuthorization{UserID: uid, Hash: got.Hash, Current: authOf(uid)}, envAt(103, 7)); err != nil {
		t.Fatal(err)
	}
	var pending map[int][]OutboxEntry
	home.view(home.l.DirGroup(), func(tx *storage.Txn) {
		pending, err = PendingOutbox(tx, home.l.Groups(), nil)
	})
	if err != nil || len(pending[RemoteDest(1)]) != 1 {
		t.Fatalf("home's outbox for DC1: %v, %v; want one step", pending[RemoteDest(1)], err)
	}
	e := pending[RemoteDest(1)][0]
	step, _, err := DecodeCommand(e.Step)
	if rg, ok := step.(RevokeGuest); err != nil || !ok || rg.PermKeyID != key || rg.KeyDC != 1 {
		t.Fatalf("step for DC1: %v %v", step, err)
	}
	in := Inbox{Group: away.l.DirGroup(), Src: RemoteSource(2, home.l.DirGroup()), Seqs: []int64{e.Seq}, Steps: [][]byte{e.Step}}
	for range 2 { // carried twice, applied once
		if _, err := away.apply(in, Env{}); err != nil {
			t.Fatal(err)
		}
	}
	away.view(away.l.DirGroup(), func(tx *storage.Txn) {
		got, _, err = GetAuthorization(tx, key)
	})
	if err != nil || got != nil {
		t.Fatalf("DC1 still has the guest authorization: %+v, %v", got, err)
	}
}
