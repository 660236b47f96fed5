package transport

import (
	"log/slog"
	"net"
	"net/http"

	"github.com/coder/websocket"
)

// WebSocketSubprotocol is the subprotocol Telegram web clients (and gotd's
// dcs.Websocket) request.
const WebSocketSubprotocol = "binary"

// WebSocketHandler serves MTProto over WebSocket as web clients use it
// (subprotocol "binary"; the path, conventionally /apiws, is chosen by the
// caller's mux). Each accepted socket is wrapped as a net.Conn whose byte
// stream is the concatenation of binary messages, and handed to serve, which
// runs the same Accept path as TCP (web clients always speak obfuscated2).
// The handler returns when serve returns, closing the socket.
//
// Any Origin is accepted: browser clients are served from other origins, and
// the protocol authenticates with MTProto keys, never with cookies, so
// cross-site requests gain an attacker nothing. Compression is disabled:
// the payload is encrypted and would not compress.
//
// The message size limit of the WebSocket library is disabled by its NetConn
// (messages are streamed, not buffered); frame sizes are bounded by Conn.
// Note that a read or write deadline that fires on a WebSocket net.Conn
// closes the whole socket, unlike TCP.
func WebSocketHandler(serve func(net.Conn), log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "transport/websocket")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:       []string{WebSocketSubprotocol},
			InsecureSkipVerify: true,
			CompressionMode:    websocket.CompressionDisabled,
		})
		if err != nil {
			// Accept has already written the HTTP error response.
			log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
			return
		}
		nc := websocket.NetConn(r.Context(), ws, websocket.MessageBinary)
		defer func() { _ = nc.Close() }()
		serve(nc)
	})
}
