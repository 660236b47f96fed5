// Package mtclient builds gotd/td clients pointed at an mtnode, the way an
// app would configure them: an address, a DC id, the server's public key
// file and a transport. Tests, the load generator and the CLI share it.
package mtclient

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/gotd/td/crypto"
	"github.com/gotd/td/session"
	"github.com/gotd/td/telegram"
	"github.com/gotd/td/telegram/dcs"
	"github.com/gotd/td/tg"
	"github.com/gotd/td/transport"
)

// Transport names the MTProto transport a client dials with.
type Transport string

// The transports mtnode serves to clients.
const (
	Abridged           Transport = "abridged"
	Intermediate       Transport = "intermediate"
	PaddedIntermediate Transport = "padded_intermediate"
	Full               Transport = "full"
	Obfuscated2        Transport = "obfuscated2" // abridged inside obfuscated2, as desktop apps do
	WebSocket          Transport = "websocket"   // obfuscated2 inside WebSocket, as web apps do
)

// Transports lists every transport, for tests that try them all.
var Transports = []Transport{Abridged, Intermediate, PaddedIntermediate, Full, Obfuscated2, WebSocket}

// Options say where the node is and how to reach it.
type Options struct {
	// Addr is the node's MTProto TCP address (host:port).
	Addr string
	// WSURL is the WebSocket URL (ws://host:port/apiws), for WebSocket.
	WSURL string
	// DC is the node's data center id.
	DC int
	// PublicKeyFile is the node's server.pub.
	PublicKeyFile string
	// Transport to dial with; Intermediate by default.
	Transport Transport
	// SessionFile keeps the client's auth key between runs; empty keeps it
	// in memory only.
	SessionFile string
	// Telegram holds any further client options (update handler, etc.).
	Telegram telegram.Options
}

// LoadPublicKey reads a PKCS#1 PEM public key as gotd expects it.
func LoadPublicKey(path string) (telegram.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return telegram.PublicKey{}, fmt.Errorf("read public key: %w", err)
	}
	keys, err := crypto.ParseRSAPublicKeys(data)
	if err != nil || len(keys) == 0 {
		return telegram.PublicKey{}, fmt.Errorf("parse public key %s: %v", path, err)
	}
	return telegram.PublicKey{RSA: keys[0]}, nil
}

// New builds a client. Run it with client.Run as usual.
func New(opts Options) (*telegram.Client, error) {
	key, err := LoadPublicKey(opts.PublicKeyFile)
	if err != nil {
		return nil, err
	}
	host, portStr, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", opts.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", opts.Addr, err)
	}
	if opts.DC == 0 {
		opts.DC = 1
	}
	t := opts.Telegram
	t.PublicKeys = []telegram.PublicKey{key}
	t.DC = opts.DC
	t.DCList = dcs.List{
		Options: []tg.DCOption{{ID: opts.DC, IPAddress: host, Port: port}},
		Domains: map[int]string{opts.DC: opts.WSURL},
	}
	switch {
	case t.Resolver != nil:
		// The caller's own (an MTProxy link, for example).
	case opts.Transport == Abridged:
		t.Resolver = dcs.Plain(dcs.PlainOptions{Protocol: transport.Abridged})
	case opts.Transport == "" || opts.Transport == Intermediate:
		t.Resolver = dcs.Plain(dcs.PlainOptions{Protocol: transport.Intermediate})
	case opts.Transport == PaddedIntermediate:
		t.Resolver = dcs.Plain(dcs.PlainOptions{Protocol: transport.PaddedIntermediate})
	case opts.Transport == Full:
		t.Resolver = dcs.Plain(dcs.PlainOptions{Protocol: transport.Full})
	case opts.Transport == Obfuscated2:
		t.Resolver = dcs.Plain(dcs.PlainOptions{Protocol: transport.Abridged, Obfuscated: true})
	case opts.Transport == WebSocket:
		if opts.WSURL == "" {
			return nil, fmt.Errorf("websocket transport needs WSURL")
		}
		t.Resolver = dcs.Websocket(dcs.WebsocketOptions{})
	default:
		return nil, fmt.Errorf("unknown transport %q", opts.Transport)
	}
	if opts.SessionFile != "" {
		t.SessionStorage = &session.FileStorage{Path: opts.SessionFile}
	}
	// The API id/hash pair identifies an app to Telegram; mtnode accepts any.
	return telegram.NewClient(1, "mtnode", t), nil
}
