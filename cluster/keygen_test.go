package cluster

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestKeygenFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	now := time.Now()
	s, err := Keygen(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{
		CACertFile: 0o644, CAKeyFile: 0o600, GossipKeyFile: 0o600, JoinTokenFile: 0o600,
	} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		// umask may only take bits away.
		if fi.Mode().Perm()&^mode != 0 {
			t.Errorf("%s mode %v, want at most %v", name, fi.Mode().Perm(), mode)
		}
	}
	if _, err := Keygen(dir, now); !errors.Is(err, ErrExists) {
		t.Fatalf("second Keygen: %v, want ErrExists", err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Key == nil || !ca.Cert.Equal(s.CA.Cert) || !ca.Cert.IsCA {
		t.Fatal("CA does not load back")
	}
	gk, err := LoadGossipKey(dir)
	if err != nil || len(gk) != GossipKeySize || string(gk) != string(s.GossipKey) {
		t.Fatalf("gossip key: %v", err)
	}
	tok, err := LoadJoinToken(dir)
	if err != nil || tok != s.JoinToken || len(tok) < 43 {
		t.Fatalf("join token %q: %v", tok, err)
	}
	// Nothing secret leaks into the public certificate file.
	raw, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if strings.Contains(string(raw), "PRIVATE") {
		t.Fatal("ca.crt holds a private key")
	}
}

func TestIssueNodeCert(t *testing.T) {
	ca := testCA(t)
	now := time.Now()
	c, err := IssueNodeCert(ca, "node-1", []string{"10.0.0.1", "n1.example.org"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NodeIDFromCert(c.Leaf)
	if err != nil || id != "node-1" {
		t.Fatalf("node id %q: %v", id, err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "node-1.node.mtnode", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("verify for %v: %v", usage, err)
		}
	}
	if len(c.Leaf.IPAddresses) != 1 || len(c.Leaf.DNSNames) != 2 {
		t.Fatalf("names: %v %v", c.Leaf.IPAddresses, c.Leaf.DNSNames)
	}
	for _, bad := range []NodeID{"", "Node", "-a", "a-", "a.b", NodeID(strings.Repeat("a", 64))} {
		if _, err := IssueNodeCert(ca, bad, nil, now, time.Hour); !errors.Is(err, ErrBadNodeID) {
			t.Errorf("IssueNodeCert(%q): %v", bad, err)
		}
	}
	if _, err := IssueNodeCert(ca, "a", []string{"x.node.mtnode"}, now, time.Hour); err == nil {
		t.Error("host in the reserved node namespace accepted")
	}
	if _, err := IssueNodeCert(&CA{Cert: ca.Cert}, "a", nil, now, time.Hour); err == nil {
		t.Error("issued without the CA key")
	}

	dir := t.TempDir()
	if err := WriteNodeCert(dir, c, ca); err != nil {
		t.Fatal(err)
	}
	if err := WriteNodeCert(dir, c, ca); !errors.Is(err, ErrExists) {
		t.Fatalf("second WriteNodeCert: %v", err)
	}
	loaded, err := LoadNodeCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, NodeKeyFile)); fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("node.key mode %v", fi.Mode().Perm())
	}
	cadir, err := LoadCA(dir)
	if err != nil || cadir.Key != nil || !cadir.Cert.Equal(ca.Cert) {
		t.Fatalf("node dir CA: %v", err)
	}
	// A node dir is enough to run a mesh.
	m, err := NewMesh(MeshConfig{ID: "node-1", Addr: "127.0.0.1:0", Cert: loaded, CA: cadir.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}
