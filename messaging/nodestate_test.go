package messaging

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/mtnode/mtnode/storage"
)

func TestStoreAuthKeyIsIdempotentAndRefusesConflicts(t *testing.T) {
	m, _ := openMachine(t, nil)
	ctx := context.Background()
	if _, err := m.Apply(ctx, StoreAuthKey{ID: 7, Data: []byte("key-a")}, Env{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(ctx, StoreAuthKey{ID: 7, Data: []byte("key-a")}, Env{}); err != nil {
		t.Fatalf("retried store: %v", err)
	}
	if _, err := m.Apply(ctx, StoreAuthKey{ID: 7, Data: []byte("key-b")}, Env{}); !errors.Is(err, errAuthKeyConflict) {
		t.Fatalf("conflicting store: %v", err)
	}
	if _, err := m.Apply(ctx, StoreAuthKey{ID: 8, Data: make([]byte, MaxAuthKeyRecord+1)}, Env{}); err == nil {
		t.Fatal("oversized record stored")
	}
	m.View(func(tx storage.Reader) error {
		v, ok, err := AuthKey(tx, 7)
		if err != nil || !ok || string(v) != "key-a" {
			t.Fatalf("AuthKey = %q %v %v", v, ok, err)
		}
		if _, ok, _ := AuthKey(tx, 8); ok {
			t.Fatal("rejected key visible")
		}
		return nil
	})
}

func TestInitSecretsFirstProposalWins(t *testing.T) {
	m, _ := openMachine(t, nil)
	ctx := context.Background()
	first := InitSecrets{Secrets: []NamedSecret{{"rsa_key", []byte("A")}, {"salt", []byte("S1")}}}
	second := InitSecrets{Secrets: []NamedSecret{{"rsa_key", []byte("B")}, {"salt", []byte("S2")}, {"access", []byte("X")}}}
	for _, c := range []InitSecrets{first, second} {
		if _, err := m.Apply(ctx, c, Env{}); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{"rsa_key": "A", "salt": "S1", "access": "X"}
	m.View(func(tx storage.Reader) error {
		for name, v := range want {
			got, ok, err := Secret(tx, name)
			if err != nil || !ok || !bytes.Equal(got, []byte(v)) {
				t.Errorf("secret %s = %q %v %v, want %q", name, got, ok, err, v)
			}
		}
		return nil
	})
	if _, err := m.Apply(ctx, InitSecrets{Secrets: []NamedSecret{{"", []byte("v")}}}, Env{}); err == nil {
		t.Fatal("unnamed secret stored")
	}
}
