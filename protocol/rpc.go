package protocol

import (
	"context"
	"errors"
	"fmt"

	"github.com/gotd/td/bin"
	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"
)

// MinLayer is the oldest API layer the server answers. Older clients get
// CONNECTION_LAYER_INVALID rather than objects they would misread.
// Answers are always encoded in layer tg.Layer; constructors that a newer
// client sends and this layer does not know are answered with
// INPUT_CONSTRUCTOR_INVALID by the handler's decoder.
const MinLayer = 160

// maxWrapperDepth bounds how many invoke* wrappers one call may nest.
const maxWrapperDepth = 8

// ClientInfo is what a client said about itself in initConnection.
type ClientInfo struct {
	APIID          int
	DeviceModel    string
	SystemVersion  string
	AppVersion     string
	SystemLangCode string
	LangPack       string
	LangCode       string
}

// Call is one RPC call as the Handler sees it: the method's TL with every
// invoke* wrapper removed, and who sent it.
type Call struct {
	// AuthKeyID is the key the message was encrypted with.
	AuthKeyID int64
	// PermKeyID is the permanent key behind the call: AuthKeyID itself for a
	// permanent key, the bound key for a bound temporary key, 0 for an
	// unbound temporary key. Authorizations hang off this id.
	PermKeyID int64
	// SessionID and MsgID identify the message.
	SessionID int64
	MsgID     int64
	// Layer is the client's API layer (0 if it never said).
	Layer int
	// NoUpdates is set by invokeWithoutUpdates: the client wants no updates
	// pushed as a result of this call.
	NoUpdates bool
	// Client is what the session's initConnection said, if it was sent
	// (with this call or an earlier one).
	Client *ClientInfo
	// KeyDC is the DC the permanent key lives in when another DC carried
	// the call here (a clustered node's routing.assist); 0 for this DC's
	// own keys.
	KeyDC int
	// Body holds the method's TL, starting with its constructor id.
	Body *bin.Buffer
}

// Handler answers RPC calls. It returns the result object or an error; a
// *tgerr.Error is sent to the client as is, any other error as 500 INTERNAL.
// Handle runs concurrently for calls from one and many connections.
type Handler interface {
	Handle(ctx context.Context, call *Call) (bin.Encoder, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, call *Call) (bin.Encoder, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, call *Call) (bin.Encoder, error) {
	return f(ctx, call)
}

// rawObject captures the rest of a buffer as the `!X` query of a wrapper.
type rawObject struct{ b []byte }

func (r *rawObject) Decode(b *bin.Buffer) error {
	r.b = append(r.b[:0], b.Buf...)
	b.Skip(len(b.Buf))
	return nil
}

func (r *rawObject) Encode(b *bin.Buffer) error {
	b.Put(r.b)
	return nil
}

// errLayer is returned for a layer below MinLayer.
var errLayer = tgerr.New(400, "CONNECTION_LAYER_INVALID")

// unwrapped is a call with its wrappers removed.
type unwrapped struct {
	body      []byte
	layer     int
	client    *ClientInfo
	afterMsgs []int64
	noUpdates bool
}

// unwrap peels invokeWithLayer, initConnection, invokeAfterMsg(s) and
// invokeWithoutUpdates (and the other invokeWith* prefixes that carry nothing
// this server acts on) in any order.
func unwrap(body []byte) (*unwrapped, error) {
	u := &unwrapped{body: body}
	for depth := 0; ; depth++ {
		if depth > maxWrapperDepth {
			return nil, tgerr.New(400, "INPUT_REQUEST_INVALID")
		}
		b := &bin.Buffer{Buf: u.body}
		id, err := b.PeekID()
		if err != nil {
			return nil, tgerr.New(400, "INPUT_REQUEST_INVALID")
		}
		q := &rawObject{}
		switch id {
		case tg.InvokeWithLayerRequestTypeID:
			r := tg.InvokeWithLayerRequest{Query: q}
			if err := r.Decode(b); err != nil {
				return nil, badRequest(err)
			}
			if r.Layer < MinLayer {
				return nil, errLayer
			}
			u.layer = r.Layer
		case tg.InitConnectionRequestTypeID:
			r := tg.InitConnectionRequest{Query: q}
			if err := r.Decode(b); err != nil {
				return nil, badRequest(err)
			}
			u.client = &ClientInfo{
				APIID:          r.APIID,
				DeviceModel:    r.DeviceModel,
				SystemVersion:  r.SystemVersion,
				AppVersion:     r.AppVersion,
				SystemLangCode: r.SystemLangCode,
				LangPack:       r.LangPack,
				LangCode:       r.LangCode,
			}
		case tg.InvokeAfterMsgRequestTypeID:
			r := tg.InvokeAfterMsgRequest{Query: q}
			if err := r.Decode(b); err != nil {
				return nil, badRequest(err)
			}
			u.afterMsgs = append(u.afterMsgs, r.MsgID)
		case tg.InvokeAfterMsgsRequestTypeID:
			r := tg.InvokeAfterMsgsRequest{Query: q}
			if err := r.Decode(b); err != nil {
				return nil, badRequest(err)
			}
			if len(r.MsgIDs)+len(u.afterMsgs) > msgWindow {
				return nil, tgerr.New(400, "MSG_ID_INVALID")
			}
			u.afterMsgs = append(u.afterMsgs, r.MsgIDs...)
		case tg.InvokeWithoutUpdatesRequestTypeID:
			r := tg.InvokeWithoutUpdatesRequest{Query: q}
			if err := r.Decode(b); err != nil {
				return nil, badRequest(err)
			}
			u.noUpdates = true
		case tg.InvokeWithMessagesRangeRequestTypeID:
			r := tg.InvokeWithMessagesRangeRequest{Query: q}
			if err := r.Decode(b); err != nil {
				return nil, badRequest(err)
			}
		case tg.InvokeWithTakeoutRequestTypeID:
			r := tg.InvokeWithTakeoutRequest{Query: q}
			if err := r.Decode(b); err != nil {
				return nil, badRequest(err)
			}
		default:
			return u, nil
		}
		u.body = q.b
	}
}

func badRequest(err error) error {
	return fmt.Errorf("%w: %w", tgerr.New(400, "INPUT_REQUEST_INVALID"), err)
}

// rpcError turns a handler error into the rpc_error the client gets.
func rpcError(err error) (code int, msg string) {
	var te *tgerr.Error
	if errors.As(err, &te) {
		return te.Code, te.Message
	}
	return 500, "INTERNAL"
}
