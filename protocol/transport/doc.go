// Package transport is the server side of the MTProto 2.0 transports.
//
// One TCP port serves every transport a client may choose: Accept peeks at
// the first bytes of a connection and recognises abridged (0xef),
// intermediate (0xeeeeeeee), padded intermediate (0xdddddddd), full (no tag,
// recognised by sequence number 0) and obfuscated2 (a random 64-byte header
// carrying one of the tagged codecs inside an AES-256-CTR stream, optionally
// keyed with MTProxy secrets) and FakeTLS (obfuscated2 inside TLS records,
// opened by a ClientHello keyed with an "ee" secret). WebSocketHandler serves
// the same transports to web clients over binary WebSocket messages.
//
// A connection Accept refuses without being sure it is a broken MTProto
// client comes back as a RejectedError with every byte read, so the caller
// can hand it to a real site and give probers nothing to recognise.
//
// The package deals only in frames: it neither decrypts MTProto envelopes nor
// interprets payloads. Every length a peer controls is checked against
// Options.MaxFrameSize before any memory is allocated for it.
//
// See https://core.telegram.org/mtproto/mtproto-transports.
package transport
