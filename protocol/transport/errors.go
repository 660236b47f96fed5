package transport

import (
	"errors"
	"fmt"
)

// Sentinel errors returned (wrapped) by Accept and Conn methods. Callers test
// them with errors.Is to choose a metric label or a transport error code; the
// wrapping message names the failing step and the offending value.
var (
	// ErrUnknownTransport means the first bytes of a connection match no
	// supported transport (HTTP, TLS, random garbage, or an obfuscated2
	// header that decrypts to no known codec under any configured secret).
	// The connection should be closed without a reply, or, when the error
	// is a *RejectedError, handed to a front site with the bytes it holds:
	// anything we sent back ourselves would help a prober fingerprint the
	// server.
	ErrUnknownTransport = errors.New("unknown transport")

	// ErrFrameTooLarge means a frame length exceeds Options.MaxFrameSize on
	// read, or the largest payload a client accepts on write. It is reported
	// before any buffer is allocated for the frame.
	ErrFrameTooLarge = errors.New("frame too large")

	// ErrBadFrame means a frame is malformed: zero or misaligned length, bad
	// checksum or out-of-order sequence number. The stream cannot be
	// resynchronised after it, so the connection must be closed.
	ErrBadFrame = errors.New("bad frame")

	// ErrBadChecksum is the ErrBadFrame reported by the full transport when a
	// frame's CRC32 does not match its contents.
	ErrBadChecksum = fmt.Errorf("%w: crc32 mismatch", ErrBadFrame)

	// ErrBadSeqNo is the ErrBadFrame reported by the full transport when a
	// client's frame sequence number is not the next one (0, 1, 2, ...).
	ErrBadSeqNo = fmt.Errorf("%w: sequence number mismatch", ErrBadFrame)

	// ErrBadOptions means Options passed to Accept are invalid (for example a
	// secret that is not 16 bytes). It is a configuration bug, not a peer
	// fault.
	ErrBadOptions = errors.New("bad transport options")
)
