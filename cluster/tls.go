package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ALPN is the application protocol every mesh connection negotiates. A bump
// of the number is a wire-incompatible change of the stream header or kinds.
const ALPN = "mtnode/1"

// nodeNameSuffix turns a node ID into the one DNS name a node certificate
// proves. Peers are verified by Go's ordinary chain + hostname check against
// that name, so the mesh needs no hand-written verification of its own.
const nodeNameSuffix = ".node.mtnode"

// NodeID names a node for as long as it exists, independent of its address.
// It is a DNS label: 1..63 of [a-z0-9-], not starting or ending with '-'.
type NodeID string

// ErrBadNodeID is returned for a node ID that is not a DNS label.
var ErrBadNodeID = errors.New("cluster: node id must be 1..63 of [a-z0-9-], no leading or trailing '-'")

// Validate reports whether id can name a node.
func (id NodeID) Validate() error {
	s := string(id)
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return fmt.Errorf("%w: %q", ErrBadNodeID, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w: %q", ErrBadNodeID, s)
		}
	}
	return nil
}

// dnsName is the certificate name that proves id.
func (id NodeID) dnsName() string { return string(id) + nodeNameSuffix }

// NodeIDFromCert returns the node ID a verified certificate proves: the one
// DNS name ending in ".node.mtnode". Zero or several such names is an error.
func NodeIDFromCert(c *x509.Certificate) (NodeID, error) {
	var id NodeID
	n := 0
	for _, name := range c.DNSNames {
		if rest, ok := strings.CutSuffix(name, nodeNameSuffix); ok {
			id = NodeID(rest)
			n++
		}
	}
	if n != 1 {
		return "", fmt.Errorf("cluster: certificate names %d node ids, want 1", n)
	}
	if err := id.Validate(); err != nil {
		return "", err
	}
	return id, nil
}

// tlsConfigs builds the two sides' TLS configs for a node. Both require a
// certificate chaining to the cluster CA from the other side: the server by
// RequireAndVerifyClientCert, the client by RootCAs and a ServerName that is
// the dialled peer's node name, so a valid certificate of another node is
// refused too.
func tlsConfigs(cert tls.Certificate, ca *x509.CertPool, now func() time.Time) (server *tls.Config, client func(peer NodeID) *tls.Config) {
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca,
		NextProtos:   []string{ALPN},
		Time:         now,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("cluster: no client certificate")
			}
			_, err := NodeIDFromCert(cs.PeerCertificates[0])
			return err
		},
	}
	client = func(peer NodeID) *tls.Config {
		return &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cert},
			RootCAs:      ca,
			ServerName:   peer.dnsName(),
			NextProtos:   []string{ALPN},
			Time:         now,
		}
	}
	return server, client
}

// identifyTLS is the client config for dialling an address whose node ID
// is not known yet (a join address given as host:port). It checks what the
// server config checks of clients: a chain to the cluster CA, for server
// auth, naming a node. The ID comes from the certificate instead of being
// required to match a name given in advance.
func identifyTLS(cert tls.Certificate, ca *x509.CertPool, now func() time.Time) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{ALPN},
		Time:         now,
		// Go's own verification needs a server name to check; the chain is
		// verified below with the same roots and usage instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("cluster: peer presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots:         ca,
				Intermediates: inter,
				CurrentTime:   now(),
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				return fmt.Errorf("cluster: peer certificate: %w", err)
			}
			_, err := NodeIDFromCert(cs.PeerCertificates[0])
			return err
		},
	}
}

// peerID returns the node ID proven by a completed handshake.
func peerID(cs tls.ConnectionState) (NodeID, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", errors.New("cluster: peer presented no certificate")
	}
	return NodeIDFromCert(cs.PeerCertificates[0])
}
