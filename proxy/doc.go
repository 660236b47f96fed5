// Package proxy is the MTProxy front door of a node: what a connection that
// is not (or not validly) MTProto becomes, and what the node learns about
// the site it pretends to be.
//
// Domain fronting is the part that exists today. A node that serves FakeTLS
// MTProxy clients on port 443 must look, to anyone who probes that port with
// a browser or a scanner, exactly like the real site named in its secret.
// When the transport layer decides that a connection is not one of ours it
// hands the socket and every byte it has already read to Front.Splice, which
// connects to the real site and copies bytes both ways unchanged, so the
// prober talks to the genuine server, certificate and all.
//
// Three rules keep fronting from becoming a liability:
//
//   - Splice is bounded: a global cap on concurrent splices and a per-source
//     token bucket reject a flood at once (ErrFrontLimited) without dialling
//     out, so the node is not an open relay and cannot be made to open
//     connections without bound.
//   - CheckNotSelf refuses a front address that would be answered by the
//     node's own listeners, which would otherwise splice each connection back
//     into itself until the limits stop it.
//   - Nothing of the spliced contents is inspected or logged; only byte and
//     connection counts leave the package (Front.Stats).
//
// LearnRecordSizes measures the TLS record sizes of the front's first
// encrypted flight so that a FakeTLS answer can mimic them.
//
// See DESIGN.md for the reasoning and what is still missing.
package proxy
