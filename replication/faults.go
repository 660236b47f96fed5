package replication

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Fault injection for raft transports, shipped beside the real transport
// the way hashicorp/raft ships inmem_transport.go and testing.go's
// Partition: cluster tests and chaos runs wrap every replica's transport in
// a FaultyTransport and drive one shared Faults from the test.

// ErrPartitioned is the error of an RPC between two addresses on different
// sides of a Faults partition, in either direction.
var ErrPartitioned = errors.New("replication: peer unreachable (injected partition)")

// ErrDropped is the error of an RPC whose request or reply a Faults lost.
var ErrDropped = errors.New("replication: message lost (injected drop)")

// DefaultFailAfter is how long a blocked or lost RPC takes to fail unless
// Faults.FailAfter says otherwise. A cut network is noticed only when a
// timeout fires; failing at once would make raft retry in a tight loop
// that no real network allows. Tests set something much shorter.
const DefaultFailAfter = 50 * time.Millisecond

// Faults is the state of a simulated network shared by the FaultyTransports
// on it: a partition, a loss probability and a delay, all changeable while
// the cluster runs. The zero value is not usable; call NewFaults. Safe for
// concurrent use.
//
// Loss decisions come from one random source seeded by NewFaults, so a run
// makes the same sequence of decisions; which RPC meets which decision
// still depends on goroutine scheduling, so a run is reproducible in
// distribution, not message for message.
type Faults struct {
	mu        sync.Mutex
	group     map[raft.ServerAddress]int // partition side; absent is side 0
	drop      float64
	delay     time.Duration
	failAfter time.Duration
	rnd       *rand.Rand
}

// NewFaults returns a healthy network whose losses are drawn from seed.
func NewFaults(seed uint64) *Faults {
	return &Faults{
		failAfter: DefaultFailAfter,
		rnd:       rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
}

// Partition splits the network: each group of addresses can reach only
// addresses in the same group, and every address named in no group is on
// one more side with all the other unnamed ones. So Partition([]{a}) cuts
// a off alone, like raft's cluster.Partition(far). The cut is symmetric
// and replaces any earlier partition.
func (f *Faults) Partition(groups ...[]raft.ServerAddress) {
	m := make(map[raft.ServerAddress]int)
	for i, g := range groups {
		for _, a := range g {
			m[a] = i + 1
		}
	}
	f.mu.Lock()
	f.group = m
	f.mu.Unlock()
}

// Heal removes the partition. Drop and Delay stay as they are.
func (f *Faults) Heal() {
	f.mu.Lock()
	f.group = nil
	f.mu.Unlock()
}

// Drop makes each outbound RPC lost with probability p (0 turns loss off):
// either the request never arrives or it is delivered and its reply is
// lost, with equal chance, so receivers also see retried requests they
// already handled. Either way the sender's RPC fails after FailAfter.
func (f *Faults) Drop(p float64) {
	f.mu.Lock()
	f.drop = p
	f.mu.Unlock()
}

// Delay holds every outbound RPC (and pipelined AppendEntries) for d
// before sending it; 0 turns delay off.
func (f *Faults) Delay(d time.Duration) {
	f.mu.Lock()
	f.delay = d
	f.mu.Unlock()
}

// FailAfter sets how long a partitioned or lost RPC takes to return its
// error, standing in for the real transport's timeout (DefaultFailAfter
// until set).
func (f *Faults) FailAfter(d time.Duration) {
	f.mu.Lock()
	f.failAfter = d
	f.mu.Unlock()
}

// Reachable reports whether the partition lets a and b talk.
func (f *Faults) Reachable(a, b raft.ServerAddress) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reachable(a, b)
}

func (f *Faults) reachable(a, b raft.ServerAddress) bool {
	return f.group == nil || f.group[a] == f.group[b]
}

// loss is what happens to one outbound message.
type loss int

const (
	delivered loss = iota
	requestLost
	replyLost
	unreachable
)

// decide draws the fate of one message from -> to, with the delay before
// sending and the time a failure takes.
func (f *Faults) decide(from, to raft.ServerAddress) (fate loss, delay, failAfter time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.reachable(from, to) {
		return unreachable, 0, f.failAfter
	}
	if f.drop > 0 && f.rnd.Float64() < f.drop {
		fate = requestLost
		if f.rnd.IntN(2) == 1 {
			fate = replyLost
		}
	}
	return fate, f.delay, f.failAfter
}

// FaultyTransport is a raft.Transport that passes everything to another
// transport through a Faults: outbound RPCs are delayed, lost or refused
// as it says, and inbound RPCs from an address cut off by the partition
// are refused too (the sender may not be wrapped, and a partition is
// symmetric). Every RPC kind is covered: AppendEntries, RequestVote,
// RequestPreVote, InstallSnapshot, TimeoutNow, heartbeats and pipelines.
//
// Pipelines are wrapped rather than refused: AppendEntriesPipeline fails
// for a cut peer, and each pipelined AppendEntries passes the same gate as
// a plain one. A failed pipelined send makes raft drop the pipeline and
// fall back to plain AppendEntries until one succeeds, which is what a
// broken stream does on a real transport, so both paths are exercised.
//
// A FaultyTransport runs one goroutine, which moves inbound RPCs from the
// wrapped transport's consumer to its own; it starts in NewFaultyTransport
// and ends in Close, which raft calls on Shutdown.
type FaultyTransport struct {
	inner  raft.Transport
	faults *Faults
	local  raft.ServerAddress

	consumer chan raft.RPC
	done     chan struct{}
	wg       sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

var (
	_ raft.Transport   = (*FaultyTransport)(nil)
	_ raft.WithPreVote = (*FaultyTransport)(nil)
	_ raft.WithClose   = (*FaultyTransport)(nil)
)

// NewFaultyTransport wraps inner, whose consumer it takes over: raft must
// be given the FaultyTransport, never inner.
func NewFaultyTransport(inner raft.Transport, faults *Faults) *FaultyTransport {
	t := &FaultyTransport{
		inner:    inner,
		faults:   faults,
		local:    inner.LocalAddr(),
		consumer: make(chan raft.RPC),
		done:     make(chan struct{}),
	}
	t.wg.Add(1)
	go t.forward()
	return t
}

// forward moves inbound RPCs to the consumer, refusing those from peers
// the partition cuts off.
func (t *FaultyTransport) forward() {
	defer t.wg.Done()
	in := t.inner.Consumer()
	for {
		select {
		case rpc := <-in:
			if err := t.refuse(rpc); err != nil {
				rpc.Respond(nil, err)
				continue
			}
			select {
			case t.consumer <- rpc:
			case <-t.done:
				rpc.Respond(nil, raft.ErrTransportShutdown)
				return
			}
		case <-t.done:
			return
		}
	}
}

// refuse returns ErrPartitioned for an RPC whose sender is cut off from
// this transport. The sender is read from the RPC header; an RPC without
// one (an old protocol version) is let through.
func (t *FaultyTransport) refuse(rpc raft.RPC) error {
	h, ok := rpc.Command.(raft.WithRPCHeader)
	if !ok {
		return nil
	}
	addr := h.GetRPCHeader().Addr
	if len(addr) == 0 {
		return nil
	}
	from := t.inner.DecodePeer(addr)
	if t.faults.Reachable(from, t.local) {
		return nil
	}
	return fmt.Errorf("%s from %s: %w", t.local, from, ErrPartitioned)
}

// sleep waits d or until Close.
func (t *FaultyTransport) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-t.done:
	}
}

// call runs one outbound RPC to target through the faults.
func (t *FaultyTransport) call(target raft.ServerAddress, send func() error) error {
	fate, delay, failAfter := t.faults.decide(t.local, target)
	switch fate {
	case unreachable:
		t.sleep(failAfter)
		return fmt.Errorf("%s to %s: %w", t.local, target, ErrPartitioned)
	case requestLost:
		t.sleep(failAfter)
		return fmt.Errorf("%s to %s: %w", t.local, target, ErrDropped)
	}
	t.sleep(delay)
	if err := send(); err != nil {
		return err
	}
	if fate == replyLost {
		t.sleep(failAfter)
		return fmt.Errorf("%s to %s: reply: %w", t.local, target, ErrDropped)
	}
	return nil
}

// Consumer implements raft.Transport: the inbound RPCs the faults let in.
func (t *FaultyTransport) Consumer() <-chan raft.RPC { return t.consumer }

// LocalAddr implements raft.Transport.
func (t *FaultyTransport) LocalAddr() raft.ServerAddress { return t.local }

// AppendEntriesPipeline implements raft.Transport. It fails for a peer
// across the partition; otherwise the pipeline's sends pass the faults one
// by one.
func (t *FaultyTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	if !t.faults.Reachable(t.local, target) {
		return nil, fmt.Errorf("%s to %s: pipeline: %w", t.local, target, ErrPartitioned)
	}
	p, err := t.inner.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return &faultyPipeline{t: t, target: target, inner: p}, nil
}

// AppendEntries implements raft.Transport.
func (t *FaultyTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return t.call(target, func() error { return t.inner.AppendEntries(id, target, args, resp) })
}

// RequestVote implements raft.Transport.
func (t *FaultyTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.call(target, func() error { return t.inner.RequestVote(id, target, args, resp) })
}

// RequestPreVote implements raft.WithPreVote. If the wrapped transport has
// no pre-vote, it answers as a peer without pre-vote does ("unexpected
// command"), which raft counts as granted: pre-vote is then a no-op, as it
// would be on inner.
func (t *FaultyTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	pv, ok := t.inner.(raft.WithPreVote)
	if !ok {
		return errors.New("unexpected command")
	}
	return t.call(target, func() error { return pv.RequestPreVote(id, target, args, resp) })
}

// InstallSnapshot implements raft.Transport. A lost or refused snapshot
// leaves data unread, as a broken connection would.
func (t *FaultyTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	return t.call(target, func() error { return t.inner.InstallSnapshot(id, target, args, resp, data) })
}

// TimeoutNow implements raft.Transport.
func (t *FaultyTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.call(target, func() error { return t.inner.TimeoutNow(id, target, args, resp) })
}

// EncodePeer implements raft.Transport.
func (t *FaultyTransport) EncodePeer(id raft.ServerID, addr raft.ServerAddress) []byte {
	return t.inner.EncodePeer(id, addr)
}

// DecodePeer implements raft.Transport.
func (t *FaultyTransport) DecodePeer(b []byte) raft.ServerAddress { return t.inner.DecodePeer(b) }

// SetHeartbeatHandler implements raft.Transport. Heartbeats that the
// wrapped transport hands straight to cb (bypassing the consumer) are
// refused from cut-off peers like every other RPC.
func (t *FaultyTransport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		t.inner.SetHeartbeatHandler(nil)
		return
	}
	t.inner.SetHeartbeatHandler(func(rpc raft.RPC) {
		if err := t.refuse(rpc); err != nil {
			rpc.Respond(nil, err)
			return
		}
		cb(rpc)
	})
}

// Close stops forwarding, fails RPCs still waiting on a fault, and closes
// the wrapped transport if it can be closed. Safe to call twice.
func (t *FaultyTransport) Close() error {
	t.closeOnce.Do(func() {
		close(t.done)
		t.wg.Wait()
		if c, ok := t.inner.(raft.WithClose); ok {
			t.closeErr = c.Close()
		}
	})
	return t.closeErr
}

// faultyPipeline passes each pipelined AppendEntries through the faults.
type faultyPipeline struct {
	t      *FaultyTransport
	target raft.ServerAddress
	inner  raft.AppendPipeline
}

// AppendEntries implements raft.AppendPipeline. A refused or lost send
// fails here after FailAfter; raft then drops the pipeline and retries
// with plain AppendEntries. A lost reply counts as a lost send: a
// pipeline's replies arrive on its consumer, out of this call's reach.
func (p *faultyPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	t := p.t
	fate, delay, failAfter := t.faults.decide(t.local, p.target)
	switch fate {
	case unreachable:
		t.sleep(failAfter)
		return nil, fmt.Errorf("%s to %s: pipeline: %w", t.local, p.target, ErrPartitioned)
	case requestLost, replyLost:
		t.sleep(failAfter)
		return nil, fmt.Errorf("%s to %s: pipeline: %w", t.local, p.target, ErrDropped)
	}
	t.sleep(delay)
	return p.inner.AppendEntries(args, resp)
}

// Consumer implements raft.AppendPipeline.
func (p *faultyPipeline) Consumer() <-chan raft.AppendFuture { return p.inner.Consumer() }

// Close implements raft.AppendPipeline.
func (p *faultyPipeline) Close() error { return p.inner.Close() }
