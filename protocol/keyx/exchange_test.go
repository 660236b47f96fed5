package keyx

import (
	"testing"
)

func TestExchangeGotdClientPermanent(t *testing.T) {
	cfg := testConfig(t)
	out := runGotdExchange(t, cfg, 2, 0, nil)
	if out.serverErr != nil || out.clientErr != nil {
		t.Fatalf("server: %v, client: %v", out.serverErr, out.clientErr)
	}
	if out.server.Key != out.client.AuthKey {
		t.Fatal("client and server derived different keys")
	}
	if out.server.ServerSalt != out.client.ServerSalt {
		t.Fatal("salt mismatch")
	}
	if out.server.Temp || out.server.ExpiresIn != 0 || out.server.DC != 2 {
		t.Fatalf("result %+v", out.server)
	}
}

func TestExchangeGotdClientTemporary(t *testing.T) {
	cfg := testConfig(t)
	out := runGotdExchange(t, cfg, -2, 3600, nil)
	if out.serverErr != nil || out.clientErr != nil {
		t.Fatalf("server: %v, client: %v", out.serverErr, out.clientErr)
	}
	if out.server.Key != out.client.AuthKey || out.server.ServerSalt != out.client.ServerSalt {
		t.Fatal("client and server disagree")
	}
	if !out.server.Temp || out.server.ExpiresIn != 3600 || out.server.DC != -2 {
		t.Fatalf("result %+v", out.server)
	}
}
