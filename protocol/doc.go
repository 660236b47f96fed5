// Package protocol is the server side of MTProto 2.0: it accepts client
// connections on any transport, creates and stores auth keys, keeps
// sessions (msg_id and seqno rules, salts, acknowledgements, resends), and
// hands each RPC call, with its wrappers removed, to a Handler.
//
// It knows nothing of clusters or storage engines: keys are kept through the
// KeyStore interface and calls are answered by the Handler the node gives it.
// The wire primitives (TL types, AES-IGE, key derivation) come from gotd/td;
// the runtime here is our own. See DESIGN.md for the rules it enforces.
package protocol
