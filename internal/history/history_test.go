package history

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const checkTimeout = 30 * time.Second

func e(rid int64, id int) Entry { return Entry{RandomID: rid, MsgID: id} }

func send(r *Recorder, client int, chat string, rid int64, id int) {
	r.BeginSend(client, chat, rid).Ok(id)
}

func read(r *Recorder, client int, chat string, es ...Entry) {
	r.BeginRead(client, chat).ReadOk(es)
}

// expectLinearizable asserts both checkers accept the history.
func expectLinearizable(t *testing.T, r *Recorder, final map[string][]Entry) {
	t.Helper()
	res, err := r.Check(checkTimeout)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if !res.Ok() {
		t.Errorf("Check: want linearizable, got %v", res)
	}
	if final != nil {
		if err := r.Audit(final); err != nil {
			t.Errorf("Audit: unexpected problems: %v", err)
		}
	}
}

// expectIllegal asserts porcupine rejects the history and, when auditWant is
// non-empty, that Audit reports a problem containing it.
func expectIllegal(t *testing.T, r *Recorder, final map[string][]Entry, auditWant string) {
	t.Helper()
	res, err := r.Check(checkTimeout)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if res.Verdict != Illegal {
		t.Errorf("Check: want illegal, got %v", res)
	}
	if auditWant == "" {
		return
	}
	aerr := r.Audit(final)
	if aerr == nil {
		t.Fatalf("Audit: want a problem mentioning %q, got none", auditWant)
	}
	if !strings.Contains(aerr.Error(), auditWant) {
		t.Errorf("Audit: want a problem mentioning %q, got: %v", auditWant, aerr)
	}
}

func TestSequentialHistoryPasses(t *testing.T) {
	r := NewRecorder(Options{})
	read(r, 0, "c")
	send(r, 0, "c", 100, 1)
	send(r, 1, "c", 200, 2)
	read(r, 1, "c", e(100, 1), e(200, 2))
	read(r, 0, "c", e(100, 1), e(200, 2))
	expectLinearizable(t, r, map[string][]Entry{"c": {e(100, 1), e(200, 2)}})
}

func TestConcurrentOverlappingSendsPass(t *testing.T) {
	r := NewRecorder(Options{})
	a := r.BeginSend(0, "c", 10)
	b := r.BeginSend(1, "c", 20)
	rd := r.BeginRead(0, "c")
	// The server applied b first although a was invoked first: allowed,
	// the two overlap.
	b.Ok(1)
	rd.ReadOk([]Entry{e(20, 1)})
	a.Ok(2)
	read(r, 1, "c", e(20, 1), e(10, 2))
	expectLinearizable(t, r, map[string][]Entry{"c": {e(20, 1), e(10, 2)}})
}

func TestConcurrentReadsMaySeeEitherSide(t *testing.T) {
	r := NewRecorder(Options{})
	s := r.BeginSend(0, "c", 10)
	r1 := r.BeginRead(1, "c")
	r1.ReadOk(nil) // before the apply
	r2 := r.BeginRead(1, "c")
	r2.ReadOk([]Entry{e(10, 5)}) // after the apply
	s.Ok(5)
	expectLinearizable(t, r, map[string][]Entry{"c": {e(10, 5)}})
}

func TestRetryAfterUnknownIsIdempotent(t *testing.T) {
	r := NewRecorder(Options{})
	first := r.BeginSend(0, "c", 10)
	first.Unknown() // e.g. the leader died after committing
	// The other member sees it; the id is not compared.
	read(r, 1, "c", e(10, 0))
	retry := r.BeginSend(0, "c", 10)
	retry.Ok(1) // the same id as the first apply
	send(r, 1, "c", 20, 2)
	read(r, 0, "c", e(10, 1), e(20, 2))
	expectLinearizable(t, r, map[string][]Entry{"c": {e(10, 1), e(20, 2)}})
}

func TestUnknownSendThatTookEffect(t *testing.T) {
	r := NewRecorder(Options{})
	r.BeginSend(0, "c", 10).Unknown()
	send(r, 1, "c", 20, 7)
	// The unknown send was applied before the acknowledged one.
	read(r, 1, "c", e(10, 3), e(20, 7))
	expectLinearizable(t, r, map[string][]Entry{"c": {e(10, 3), e(20, 7)}})
}

func TestUnknownSendThatDidNotTakeEffect(t *testing.T) {
	r := NewRecorder(Options{})
	r.BeginSend(0, "c", 10).Unknown()
	send(r, 1, "c", 20, 1)
	read(r, 1, "c", e(20, 1))
	read(r, 0, "c", e(20, 1))
	expectLinearizable(t, r, map[string][]Entry{"c": {e(20, 1)}})
}

func TestUnknownSendMayApplyLate(t *testing.T) {
	// A request stuck in a queue can be applied long after the client
	// gave up on it.
	r := NewRecorder(Options{})
	r.BeginSend(0, "c", 10).Unknown()
	send(r, 1, "c", 20, 1)
	read(r, 1, "c", e(20, 1))
	read(r, 0, "c", e(20, 1), e(10, 2))
	expectLinearizable(t, r, map[string][]Entry{"c": {e(20, 1), e(10, 2)}})
}

func TestPendingOperationsAreTreatedAsUnknown(t *testing.T) {
	r := NewRecorder(Options{})
	r.BeginSend(0, "c", 10) // never completed
	r.BeginRead(1, "c")     // never completed
	read(r, 1, "c", e(10, 1))
	expectLinearizable(t, r, map[string][]Entry{"c": {e(10, 1)}})
}

func TestChatsAreIndependent(t *testing.T) {
	r := NewRecorder(Options{})
	send(r, 0, "a", 1, 1)
	send(r, 0, "b", 1, 1) // same random_id in another chat is a different message
	send(r, 1, "b", 2, 2)
	read(r, 1, "a", e(1, 1))
	read(r, 0, "b", e(1, 1), e(2, 2))
	res, err := r.Check(checkTimeout)
	if err != nil || !res.Ok() || res.Chats != 2 || res.Ops != 5 {
		t.Fatalf("Check = %v, %v; want ok over 5 ops in 2 chats", res, err)
	}
	if err := r.Audit(map[string][]Entry{"a": {e(1, 1)}, "b": {e(1, 1), e(2, 2)}}); err != nil {
		t.Fatal(err)
	}
}

func TestLostAcknowledgedSendIsRejected(t *testing.T) {
	r := NewRecorder(Options{})
	send(r, 0, "c", 10, 1)
	send(r, 0, "c", 20, 2)
	read(r, 1, "c", e(10, 1))
	expectIllegal(t, r, map[string][]Entry{"c": {e(10, 1)}}, "random_id 20 (acked id 2 by op #1, client 0) is missing")
}

func TestLostChatIsReportedByAudit(t *testing.T) {
	r := NewRecorder(Options{})
	send(r, 0, "c", 10, 1)
	if err := r.Audit(map[string][]Entry{}); err == nil || !strings.Contains(err.Error(), "lost write") {
		t.Fatalf("Audit = %v, want lost write", err)
	}
}

func TestDuplicateRandomIDInReadIsRejected(t *testing.T) {
	r := NewRecorder(Options{})
	first := r.BeginSend(0, "c", 10)
	first.Unknown()
	send(r, 0, "c", 10, 2) // retry, but the server applied it twice
	read(r, 1, "c", e(10, 1), e(10, 2))
	expectIllegal(t, r, map[string][]Entry{"c": {e(10, 1), e(10, 2)}}, "random_id 10 appears at positions 0 and 1 (duplicate)")
}

func TestNonIdempotentRetryIsRejected(t *testing.T) {
	r := NewRecorder(Options{})
	send(r, 0, "c", 10, 1)
	send(r, 0, "c", 10, 2)
	expectIllegal(t, r, map[string][]Entry{"c": {e(10, 1)}}, "retry not idempotent")
}

func TestIDsAgainstRealTimeOrderAreRejected(t *testing.T) {
	r := NewRecorder(Options{})
	send(r, 0, "c", 10, 5)
	send(r, 1, "c", 20, 3) // started after 10 was acked, got a smaller id
	expectIllegal(t, r, map[string][]Entry{"c": {e(20, 3), e(10, 5)}}, "yet got a smaller or equal id")
}

func TestPositionsAgainstRealTimeOrderAreRejected(t *testing.T) {
	r := NewRecorder(Options{})
	send(r, 0, "c", 10, 1)
	send(r, 1, "c", 20, 2)
	read(r, 1, "c", e(20, 2), e(10, 1))
	// Ids are not compared here (0), so only the order can give it away.
	final := map[string][]Entry{"c": {e(20, 0), e(10, 0)}}
	expectIllegal(t, r, final, "yet sits before it in the final contents")
}

func TestDecreasingIDsInReadAreRejected(t *testing.T) {
	r := NewRecorder(Options{})
	a := r.BeginSend(0, "c", 10)
	b := r.BeginSend(1, "c", 20)
	a.Unknown()
	b.Unknown()
	read(r, 1, "c", e(10, 4), e(20, 3))
	expectIllegal(t, r, map[string][]Entry{"c": {e(10, 4), e(20, 3)}}, "does not exceed the earlier id 4")
}

func TestNoRoomForUnobservedIDsIsRejected(t *testing.T) {
	// 10 was applied before 20, so its id is below 1: impossible for a
	// positive id. Only the model's gap reasoning can see this.
	r := NewRecorder(Options{})
	r.BeginSend(0, "c", 10).Unknown()
	send(r, 1, "c", 20, 1)
	read(r, 1, "c", e(10, 0), e(20, 1))
	expectIllegal(t, r, nil, "")
}

func TestReadShowingFutureSendIsRejected(t *testing.T) {
	r := NewRecorder(Options{})
	read(r, 1, "c", e(10, 1))
	send(r, 0, "c", 10, 1) // invoked after the read had returned
	expectIllegal(t, r, nil, "")
}

func TestStaleReadIsRejected(t *testing.T) {
	r := NewRecorder(Options{})
	send(r, 0, "c", 10, 1)
	r1 := r.BeginRead(1, "c")
	s := r.BeginSend(0, "c", 20)
	r1.ReadOk([]Entry{e(10, 1), e(20, 2)})
	read(r, 0, "c", e(10, 1)) // later read, lagging replica
	s.Ok(2)
	expectIllegal(t, r, nil, "")
}

func TestUnknownSendCannotVanish(t *testing.T) {
	r := NewRecorder(Options{})
	r.BeginSend(0, "c", 10).Unknown()
	read(r, 1, "c", e(10, 1))
	read(r, 1, "c") // once observed it must stay
	expectIllegal(t, r, nil, "")
}

func TestPhantomMessageIsReportedByAudit(t *testing.T) {
	r := NewRecorder(Options{})
	send(r, 0, "c", 10, 1)
	read(r, 0, "c", e(10, 1), e(99, 2))
	expectIllegal(t, r, map[string][]Entry{"c": {e(10, 1)}}, "random_id 99 at position 1 was never sent")
}

func TestWriteVisualization(t *testing.T) {
	r := NewRecorder(Options{})
	send(r, 0, "c", 10, 1)
	read(r, 1, "c")
	res, err := r.Check(checkTimeout)
	if err != nil || res.Verdict != Illegal {
		t.Fatalf("Check = %v, %v; want illegal", res, err)
	}
	path := filepath.Join(t.TempDir(), "viz.html")
	if err := res.WriteVisualization(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "send(10)") {
		t.Errorf("visualization does not describe the send; %d bytes", len(b))
	}
}

func TestOpLimit(t *testing.T) {
	r := NewRecorder(Options{MaxOps: 2})
	send(r, 0, "c", 1, 1)
	send(r, 0, "c", 2, 2)
	send(r, 0, "c", 3, 3) // dropped
	if r.Len() != 2 {
		t.Fatalf("Len = %d, want 2", r.Len())
	}
	if _, err := r.Check(0); !errors.Is(err, ErrTooManyOps) {
		t.Errorf("Check error = %v, want ErrTooManyOps", err)
	}
	if err := r.Audit(nil); !errors.Is(err, ErrTooManyOps) {
		t.Errorf("Audit error = %v, want ErrTooManyOps", err)
	}
}

func TestReadEntryLimit(t *testing.T) {
	r := NewRecorder(Options{MaxReadEntries: 3})
	read(r, 0, "c", e(1, 1), e(2, 2))
	read(r, 0, "c", e(1, 1), e(2, 2))
	if err := r.Err(); !errors.Is(err, ErrTooManyOps) {
		t.Errorf("Err = %v, want ErrTooManyOps", err)
	}
}

func TestMisuseIsReported(t *testing.T) {
	r := NewRecorder(Options{})
	op := r.BeginSend(0, "c", 1)
	op.Ok(1)
	op.Ok(1)
	r.BeginRead(0, "c").Ok(3)
	r.BeginSend(-1, "c", 2)
	err := r.Err()
	if !errors.Is(err, ErrMisuse) {
		t.Fatalf("Err = %v, want ErrMisuse", err)
	}
	for _, want := range []string{"completed twice", "completed as a send", "client -1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("misuse error lacks %q: %v", want, err)
		}
	}
	if _, err := r.Check(0); !errors.Is(err, ErrMisuse) {
		t.Errorf("Check error = %v, want ErrMisuse", err)
	}
}

// fakeServer is an in-memory chat store with switchable bugs, used to drive
// the recorder from many goroutines as a real test would.
type fakeServer struct {
	mu       sync.Mutex
	chats    map[string][]Entry
	nextID   map[string]int
	sends    int
	loseEach int // if > 0, every loseEach-th new message is acked but not stored
}

var errTimeout = errors.New("timeout")

func (s *fakeServer) send(chat string, rid int64, rng *rand.Rand) (int, error) {
	if rng.IntN(10) == 0 {
		return 0, errTimeout // lost before reaching the server
	}
	s.mu.Lock()
	id := 0
	for _, m := range s.chats[chat] {
		if m.RandomID == rid {
			id = m.MsgID
		}
	}
	if id == 0 {
		s.nextID[chat] += 1 + rng.IntN(3) // ids need not be contiguous
		id = s.nextID[chat]
		s.sends++
		if s.loseEach == 0 || s.sends%s.loseEach != 0 {
			s.chats[chat] = append(s.chats[chat], Entry{rid, id})
		}
	}
	s.mu.Unlock()
	if rng.IntN(10) == 0 {
		return 0, errTimeout // applied, but the answer was lost
	}
	return id, nil
}

func (s *fakeServer) read(chat string) []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Entry(nil), s.chats[chat]...)
}

func runWorkload(t *testing.T, srv *fakeServer) (*Recorder, map[string][]Entry) {
	t.Helper()
	const clients, opsPerClient = 6, 150
	chats := []string{"alice:bob", "carol:dave", "erin:frank"}
	r := NewRecorder(Options{})
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 42))
			for i := range opsPerClient {
				chat := chats[rng.IntN(len(chats))]
				if rng.IntN(3) == 0 {
					op := r.BeginRead(c, chat)
					op.ReadOk(srv.read(chat))
					continue
				}
				rid := int64(c)<<32 | int64(i)
				for range 3 { // retry the same random_id after a timeout
					op := r.BeginSend(c, chat, rid)
					id, err := srv.send(chat, rid, rng)
					if err != nil {
						op.Unknown()
						continue
					}
					op.Ok(id)
					break
				}
			}
		})
	}
	wg.Wait()
	final := make(map[string][]Entry)
	for _, chat := range chats {
		op := r.BeginRead(0, chat)
		final[chat] = srv.read(chat)
		op.ReadOk(final[chat])
	}
	return r, final
}

func newFakeServer() *fakeServer {
	return &fakeServer{chats: make(map[string][]Entry), nextID: make(map[string]int)}
}

func TestConcurrentWorkloadAgainstCorrectServer(t *testing.T) {
	r, final := runWorkload(t, newFakeServer())
	expectLinearizable(t, r, final)
}

func TestConcurrentWorkloadAgainstLossyServer(t *testing.T) {
	srv := newFakeServer()
	srv.loseEach = 25
	r, final := runWorkload(t, srv)
	res, err := r.Check(checkTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != Illegal {
		t.Errorf("Check: want illegal, got %v", res)
	}
	// Some lost messages were only ever answered as timeouts; those are
	// fine. At least one acknowledged one must be reported.
	aerr := r.Audit(final)
	if aerr == nil || !strings.Contains(aerr.Error(), "lost write") {
		t.Errorf("Audit = %v, want a lost write", aerr)
	}
}

func TestDescribeEntriesTruncates(t *testing.T) {
	var es []Entry
	for i := range 30 {
		es = append(es, e(int64(i), i+1))
	}
	got := describeEntries(es)
	if !strings.Contains(got, "...18 more...") || !strings.HasSuffix(got, " 29:30]") || !strings.HasPrefix(got, "[0:1 1:2") {
		t.Errorf("describeEntries = %s", got)
	}
	if got := describeEntries([]Entry{e(5, 0)}); got != "[5:?]" {
		t.Errorf("describeEntries = %s", got)
	}
}

func ExampleRecorder() {
	r := NewRecorder(Options{})
	op := r.BeginSend(0, "alice:bob", 1001)
	op.Ok(1) // the server answered with message id 1
	rd := r.BeginRead(1, "alice:bob")
	rd.ReadOk([]Entry{{RandomID: 1001, MsgID: 1}})
	res, err := r.Check(10 * time.Second)
	fmt.Println(res.Verdict, err, r.Audit(map[string][]Entry{"alice:bob": {{RandomID: 1001, MsgID: 1}}}))
	// Output: ok <nil> <nil>
}
