package cluster

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside a cluster secrets directory (mtnode keygen --out DIR).
const (
	CACertFile    = "ca.crt"     // cluster CA certificate, public
	CAKeyFile     = "ca.key"     // cluster CA private key, 0600
	GossipKeyFile = "gossip.key" // memberlist AES-256 key, base64, 0600
	JoinTokenFile = "join.token" // join token, 0600
	NodeCertFile  = "node.crt"   // one node's certificate (+ CA), public
	NodeKeyFile   = "node.key"   // that node's private key, 0600
)

// Default lifetimes. The CA outlives any node; a node certificate is renewed
// by issuing a new one, which needs no coordination since peers trust the CA.
const (
	DefaultCAValidity   = 20 * 365 * 24 * time.Hour
	DefaultNodeValidity = 2 * 365 * 24 * time.Hour
)

// GossipKeySize is the memberlist key length: 32 bytes selects AES-256.
const GossipKeySize = 32

// ErrExists is returned by Keygen and WriteNodeCert rather than overwrite a
// file: replacing a cluster's CA or keys would cut every node off.
var ErrExists = errors.New("cluster: refusing to overwrite existing file")

// CA is the cluster's own certificate authority.
type CA struct {
	// Cert is the self-signed CA certificate.
	Cert *x509.Certificate
	// Key signs node certificates. Nil when only the certificate was loaded.
	Key crypto.Signer
}

// Pool returns a pool holding only this CA: the one root a mesh trusts.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// NewCA makes a self-signed ECDSA P-256 CA valid from now-1h (clock skew)
// for validity. ECDSA P-256 rather than Ed25519: every TLS stack and tool
// (openssl, browsers for a future status page) verifies it.
func NewCA(name string, now time.Time, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ca key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"mtnode cluster"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse ca certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// IssueNodeCert issues a certificate for node id, signed by ca, usable as
// both TLS server and client. hosts (IPs or DNS names) are added as extra
// names for other tools; the mesh itself only checks the node name. The
// certificate is valid from notBefore for validity, capped at the CA's end.
func IssueNodeCert(ca *CA, id NodeID, hosts []string, notBefore time.Time, validity time.Duration) (tls.Certificate, error) {
	if ca == nil || ca.Key == nil {
		return tls.Certificate{}, errors.New("cluster: issue node cert: no ca key")
	}
	if err := id.Validate(); err != nil {
		return tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate node key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	notAfter := notBefore.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: string(id), Organization: []string{"mtnode cluster"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{id.dnsName()},
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		switch {
		case h == "":
		case net.ParseIP(h) != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(h))
		case strings.HasSuffix(h, nodeNameSuffix):
			return tls.Certificate{}, fmt.Errorf("cluster: host %q uses the reserved node name suffix", h)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create node certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse node certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// Secrets is what Keygen makes.
type Secrets struct {
	CA        *CA
	GossipKey []byte // GossipKeySize bytes, memberlist's SecretKey
	JoinToken string // 43 characters of base64url (256 random bits)
}

// Keygen makes a new cluster CA, gossip key and join token and writes them
// into dir (created 0700 if missing). Private files are 0600. It refuses to
// overwrite any of them (ErrExists), so running it twice cannot replace a
// live cluster's CA.
func Keygen(dir string, now time.Time) (*Secrets, error) {
	for _, name := range []string{CACertFile, CAKeyFile, GossipKeyFile, JoinTokenFile} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return nil, fmt.Errorf("%w: %s", ErrExists, filepath.Join(dir, name))
		}
	}
	ca, err := NewCA("mtnode cluster CA", now, DefaultCAValidity)
	if err != nil {
		return nil, err
	}
	gk := make([]byte, GossipKeySize)
	if _, err := rand.Read(gk); err != nil {
		return nil, fmt.Errorf("generate gossip key: %w", err)
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return nil, fmt.Errorf("generate join token: %w", err)
	}
	s := &Secrets{CA: ca, GossipKey: gk, JoinToken: base64.RawURLEncoding.EncodeToString(tok)}

	keyPEM, err := keyPEM(ca.Key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CAKeyFile, keyPEM, 0o600},
		{GossipKeyFile, []byte(base64.StdEncoding.EncodeToString(gk) + "\n"), 0o600},
		{JoinTokenFile, []byte(s.JoinToken + "\n"), 0o600},
		{CACertFile, certPEM(ca.Cert.Raw), 0o644},
	}
	for _, f := range files {
		if err := writeNew(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// WriteNodeCert writes a node certificate and its key into dir as node.crt
// and node.key (0600), plus the CA certificate as ca.crt, so dir is all a
// node needs to join (with gossip.key). It refuses to overwrite node.crt or
// node.key, or a ca.crt of another CA.
func WriteNodeCert(dir string, cert tls.Certificate, ca *CA) error {
	kp, err := keyPEM(cert.PrivateKey)
	if err != nil {
		return err
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, certPEM(der)...)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for _, name := range []string{NodeCertFile, NodeKeyFile} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("%w: %s", ErrExists, filepath.Join(dir, name))
		}
	}
	caPath := filepath.Join(dir, CACertFile)
	if old, err := os.ReadFile(caPath); err == nil {
		if !bytes.Equal(old, certPEM(ca.Cert.Raw)) {
			return fmt.Errorf("%w: %s holds another CA", ErrExists, caPath)
		}
	} else if err := writeNew(caPath, certPEM(ca.Cert.Raw), 0o644); err != nil {
		return err
	}
	if err := writeNew(filepath.Join(dir, NodeKeyFile), kp, 0o600); err != nil {
		return err
	}
	return writeNew(filepath.Join(dir, NodeCertFile), chain, 0o644)
}

// LoadNodeCert reads node.crt and node.key from dir.
func LoadNodeCert(dir string) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, NodeCertFile), filepath.Join(dir, NodeKeyFile))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load node certificate: %w", err)
	}
	return c, nil
}

// LoadCA reads ca.crt from dir, and ca.key too when present (a node without
// the CA key can still verify peers; it cannot issue certificates).
func LoadCA(dir string) (*CA, error) {
	raw, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("read ca certificate: %w", err)
	}
	b, _ := pem.Decode(raw)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("cluster: ca.crt holds no PEM certificate")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse ca certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("cluster: ca.crt is not a CA certificate")
	}
	ca := &CA{Cert: cert}
	raw, err = os.ReadFile(filepath.Join(dir, CAKeyFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return ca, nil
	case err != nil:
		return nil, fmt.Errorf("read ca key: %w", err)
	}
	b, _ = pem.Decode(raw)
	if b == nil {
		return nil, errors.New("cluster: ca.key holds no PEM key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse ca key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("cluster: ca.key is not a signing key")
	}
	ca.Key = signer
	return ca, nil
}

// LoadGossipKey reads the base64 memberlist key from dir/gossip.key.
func LoadGossipKey(dir string) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join(dir, GossipKeyFile))
	if err != nil {
		return nil, fmt.Errorf("read gossip key: %w", err)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(k) != GossipKeySize {
		return nil, fmt.Errorf("cluster: gossip.key must be %d bytes of base64", GossipKeySize)
	}
	return k, nil
}

// LoadJoinToken reads dir/join.token.
func LoadJoinToken(dir string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, JoinTokenFile))
	if err != nil {
		return "", fmt.Errorf("read join token: %w", err)
	}
	t := strings.TrimSpace(string(raw))
	if t == "" {
		return "", errors.New("cluster: join.token is empty")
	}
	return t, nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(k crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	return s, nil
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	h := sha256.Sum256(der)
	return h[:20]
}
