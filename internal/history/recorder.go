package history

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Default bounds for a [Recorder].
const (
	DefaultMaxOps         = 1_000_000
	DefaultMaxReadEntries = 10_000_000
)

// ErrTooManyOps is returned (wrapped) by Check and Audit when the recorder
// hit one of its bounds and therefore holds an incomplete history.
var ErrTooManyOps = errors.New("history: recorder limit exceeded, history is incomplete")

// ErrMisuse is returned (wrapped) by Check and Audit when an [Op] was
// completed twice or with the wrong method, or a client number was negative.
var ErrMisuse = errors.New("history: recorder misused")

// Entry is one message of a chat as seen by a client: the random_id the
// sender chose and the message id the server assigned. MsgID 0 means the id
// was not observed.
type Entry struct {
	RandomID int64
	MsgID    int
}

// Options bounds a [Recorder]. Zero fields take the defaults.
type Options struct {
	// MaxOps caps the number of Begin* calls recorded.
	MaxOps int
	// MaxReadEntries caps the total number of entries stored across all
	// successful reads (reads of long chats are the memory hog).
	MaxReadEntries int
}

type opKind uint8

const (
	kindSend opKind = iota + 1
	kindRead
)

func (k opKind) String() string {
	if k == kindSend {
		return "send"
	}
	return "read"
}

type opStatus uint8

const (
	statusPending opStatus = iota
	statusOk
	statusUnknown
)

// record is the stored form of one operation.
type record struct {
	kind     opKind
	status   opStatus
	client   int
	chat     string
	randomID int64   // sends only
	msgID    int     // acknowledged sends only
	entries  []Entry // successful reads only (private copy)
	call     int64
	ret      int64 // 0 while pending or unknown
}

// Recorder collects a concurrent history. All methods are safe for
// concurrent use. The zero value is not usable; call [NewRecorder].
type Recorder struct {
	clock          atomic.Int64
	maxOps         int
	maxReadEntries int

	mu          sync.Mutex
	recs        []record
	readEntries int
	droppedOps  int
	overflowed  bool
	misuse      []error // first few misuse reports
	misuseCount int
}

const maxMisuseReports = 16

// NewRecorder returns an empty recorder with the given bounds.
func NewRecorder(opts Options) *Recorder {
	if opts.MaxOps <= 0 {
		opts.MaxOps = DefaultMaxOps
	}
	if opts.MaxReadEntries <= 0 {
		opts.MaxReadEntries = DefaultMaxReadEntries
	}
	return &Recorder{maxOps: opts.MaxOps, maxReadEntries: opts.MaxReadEntries}
}

// Op is a handle on one in-flight operation. Complete it exactly once. An Op
// returned after the recorder overflowed is detached: completing it does
// nothing. Methods on a nil *Op do nothing.
type Op struct {
	r    *Recorder
	idx  int // -1 when detached
	kind opKind
}

// now returns a fresh, strictly increasing timestamp.
func (r *Recorder) now() int64 { return r.clock.Add(1) }

// BeginSend records the invocation of a send of randomID into chat by
// client. Call it before the request leaves the client.
func (r *Recorder) BeginSend(client int, chat string, randomID int64) *Op {
	return r.begin(record{kind: kindSend, client: client, chat: chat, randomID: randomID})
}

// BeginRead records the invocation of a history read of chat by client.
func (r *Recorder) BeginRead(client int, chat string) *Op {
	return r.begin(record{kind: kindRead, client: client, chat: chat})
}

func (r *Recorder) begin(rec record) *Op {
	rec.call = r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec.client < 0 {
		r.misusef("%s by client %d: client numbers must be >= 0", rec.kind, rec.client)
		return &Op{r: r, idx: -1, kind: rec.kind}
	}
	if r.overflowed || len(r.recs) >= r.maxOps {
		r.overflowed = true
		r.droppedOps++
		return &Op{r: r, idx: -1, kind: rec.kind}
	}
	r.recs = append(r.recs, rec)
	return &Op{r: r, idx: len(r.recs) - 1, kind: rec.kind}
}

// misusef notes a misuse; r.mu must be held.
func (r *Recorder) misusef(format string, args ...any) {
	r.misuseCount++
	if len(r.misuse) < maxMisuseReports {
		r.misuse = append(r.misuse, fmt.Errorf(format, args...))
	}
}

// Ok completes a send that the server acknowledged with msgID.
func (o *Op) Ok(msgID int) {
	if o == nil {
		return
	}
	o.finish(kindSend, statusOk, msgID, nil)
}

// ReadOk completes a read that returned entries (oldest first). The slice
// is copied.
func (o *Op) ReadOk(entries []Entry) {
	if o == nil {
		return
	}
	o.finish(kindRead, statusOk, 0, entries)
}

// Unknown completes an operation whose outcome is not known (timeout, lost
// connection, node killed). A send completed this way may or may not have
// been applied; a read completed this way is ignored.
func (o *Op) Unknown() {
	if o == nil {
		return
	}
	o.finish(o.kind, statusUnknown, 0, nil)
}

func (o *Op) finish(kind opKind, st opStatus, msgID int, entries []Entry) {
	ts := o.r.now()
	r := o.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if o.idx < 0 {
		return
	}
	rec := &r.recs[o.idx]
	if rec.kind != kind {
		r.misusef("op #%d (%s) completed as a %s", o.idx, rec.kind, kind)
		return
	}
	if rec.status != statusPending {
		r.misusef("op #%d (%s) completed twice", o.idx, rec.kind)
		return
	}
	rec.status = st
	if st != statusOk {
		return
	}
	rec.ret = ts
	rec.msgID = msgID
	if kind == kindRead {
		if r.readEntries+len(entries) > r.maxReadEntries {
			// Keeping the op without its data would be wrong, and
			// dropping it silently would be unsound: refuse to judge.
			r.overflowed = true
			rec.status = statusUnknown
			return
		}
		r.readEntries += len(entries)
		rec.entries = append([]Entry(nil), entries...)
	}
}

// Len reports how many operations are recorded.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.recs)
}

// Err reports whether the recorded history is unusable: it wraps
// [ErrTooManyOps] after an overflow and [ErrMisuse] after a misuse.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errLocked()
}

func (r *Recorder) errLocked() error {
	var errs []error
	if r.overflowed {
		errs = append(errs, fmt.Errorf("%w (limits: %d ops, %d read entries; %d ops dropped, %d read entries stored)",
			ErrTooManyOps, r.maxOps, r.maxReadEntries, r.droppedOps, r.readEntries))
	}
	if r.misuseCount > 0 {
		errs = append(errs, fmt.Errorf("%w: %d problem(s): %w", ErrMisuse, r.misuseCount, errors.Join(r.misuse...)))
	}
	return errors.Join(errs...)
}

// snapshot returns a copy of the records (entries slices are shared but
// never mutated after completion) and the recorder error.
func (r *Recorder) snapshot() ([]record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.errLocked(); err != nil {
		return nil, err
	}
	return append([]record(nil), r.recs...), nil
}
