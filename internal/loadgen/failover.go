package loadgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/tg"
)

// FailoverReport is the failover scenario: a 3-node child DC under a
// steady chat load; each round finds the leader, kills it with SIGKILL,
// measures until another node reports itself Leader and until a send
// begun after the kill is acknowledged, then restarts the killed node on
// its data dir and ports and waits until it serves.
type FailoverReport struct {
	Nodes int
	// Users chat in pairs, spread round-robin over the nodes, each sending
	// at most one message per SendInterval (each send bounded by
	// SendTimeout).
	Users        int
	SendInterval time.Duration
	SendTimeout  time.Duration
	// Form is the time to form the DC, Setup to sign the users up.
	Form, Setup time.Duration
	Rounds      []FailoverRound
	// Leader is the time from SIGKILL of the leader until another node
	// reports itself Leader in /cluster/status (polled every 10 ms);
	// Resume until the first acknowledgement of a send begun after the
	// killed process was gone; Restart from restarting the killed node
	// until it logged "mtnode serving" again.
	Leader, Resume, Restart Spread
	// CatchUp is from the restart until the restarted node followed the
	// leader and had applied what the leader had committed then.
	CatchUp Spread
	// Sent and Errors count every send of the whole scenario.
	Sent, Errors int64
	FirstError   string
}

// FailoverRound is one leader kill.
type FailoverRound struct {
	Killed, NewLeader       string
	KilledBy                string // the killed process's exit: "signal: killed"
	Leader, Resume, Restart time.Duration
	// CatchUp is from the restart until the node followed the leader and
	// had applied what the leader had committed once it served.
	CatchUp time.Duration
}

// Spread is the minimum, median and maximum of a few durations.
type Spread struct {
	Min, Median, Max time.Duration
}

func spreadOf(ds []time.Duration) Spread {
	if len(ds) == 0 {
		return Spread{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Min: s[0], Median: med, Max: s[len(s)-1]}
}

const (
	failoverNodes    = 3
	failoverUsers    = 6
	failoverInterval = 50 * time.Millisecond
	failoverTimeout  = 5 * time.Second // one send
	// failoverWait bounds each wait of a round: a new leader, resumed
	// writes, the warm-up and settling acknowledgements.
	failoverWait = 60 * time.Second
	// failoverSettle is how many acknowledgements, with every node up,
	// come between a restart and the next kill (and before the first).
	failoverSettle = 30
)

// failoverLoad is the steady chat load of the failover scenario.
type failoverLoad struct {
	acks   atomic.Int64
	errs   atomic.Int64
	errMu  sync.Mutex
	first  string
	since  atomic.Int64 // UnixNano; sends begun after it resume writes; 0: not watching
	resume chan time.Time
}

func (l *failoverLoad) run(ctx context.Context, f *chatFleet, maxPerUser int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, u := range f.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < maxPerUser && ctx.Err() == nil; i++ {
				t0 := time.Now()
				sctx, cancel := context.WithTimeout(ctx, failoverTimeout)
				_, err := u.api.MessagesSendMessage(sctx, &tg.MessagesSendMessageRequest{
					Peer: u.peer, Message: strconv.FormatInt(t0.UnixNano(), 10), RandomID: rand.Int64(),
				})
				cancel()
				now := time.Now()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					l.errs.Add(1)
					l.errMu.Lock()
					if l.first == "" {
						l.first = err.Error()
					}
					l.errMu.Unlock()
				} else {
					l.acks.Add(1)
					if s := l.since.Load(); s != 0 && t0.UnixNano() >= s && l.since.CompareAndSwap(s, 0) {
						l.resume <- now
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(failoverInterval - min(time.Since(t0), failoverInterval)):
				}
			}
		}()
	}
	return &wg
}

// waitAcks waits until n more sends were acknowledged.
func (l *failoverLoad) waitAcks(ctx context.Context, n int64) error {
	target := l.acks.Load() + n
	deadline := time.Now().Add(failoverWait)
	for l.acks.Load() < target {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d acknowledgements within %s (errors %d, first %q)",
				l.acks.Load()-target+n, n, failoverWait, l.errs.Load(), l.firstErr())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func (l *failoverLoad) firstErr() string {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.first
}

func runFailover(ctx context.Context, opts *Options, log *slog.Logger) (rep *FailoverReport, err error) {
	if opts.NodeBinary == "" {
		return nil, errors.New("no node binary to start")
	}
	rep = &FailoverReport{Nodes: failoverNodes, Users: failoverUsers,
		SendInterval: failoverInterval, SendTimeout: failoverTimeout}
	log.Info("forming a DC for the failover scenario", "nodes", failoverNodes)
	t0 := time.Now()
	cl, err := startCluster(ctx, opts.NodeBinary, opts.ServerProcs, failoverNodes, log)
	if err != nil {
		return rep, err
	}
	defer func() {
		if cerr := cl.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	rep.Form = time.Since(t0)
	t, err := clusterTarget(cl, &http.Client{Timeout: 10 * time.Second}, false)
	if err != nil {
		return rep, err
	}
	rs := &runState{t: &t.target, opts: opts, log: log, rep: &Report{}}
	t0 = time.Now()
	var setup ChatReport
	f, err := setupChat(ctx, rs, failoverUsers, 0, &setup)
	if err != nil {
		return rep, fmt.Errorf("setup: %w", err)
	}
	rep.Setup = time.Since(t0)

	l := &failoverLoad{resume: make(chan time.Time, 1)}
	lctx, stopLoad := context.WithCancel(ctx)
	// At most one send per interval per user for the whole scenario.
	budget := time.Duration(opts.Failovers)*(4*failoverWait+2*clusterStartTimeout) + failoverWait
	wg := l.run(lctx, f, min(int(budget/failoverInterval), opts.MaxOps))
	defer func() {
		stopLoad()
		wg.Wait()
		rep.Sent, rep.Errors, rep.FirstError = l.acks.Load(), l.errs.Load(), l.firstErr()
		if cerr := f.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := l.waitAcks(ctx, failoverSettle); err != nil {
		return rep, fmt.Errorf("warm-up: %w", err)
	}
	var leads, resumes, restarts, catchUps []time.Duration
	for r := range opts.Failovers {
		lead, err := cl.leader(ctx, -1, failoverWait)
		if err != nil {
			return rep, fmt.Errorf("round %d: %w", r+1, err)
		}
		round := FailoverRound{Killed: cl.id(lead)}
		victim := cl.nodes[lead]
		log.Info("killing the leader", "round", r+1, "node", round.Killed, "pid", victim.cmd.Process.Pid)
		killed := time.Now()
		cl.kill(lead) // SIGKILL; returns once the process is reaped
		round.KilledBy = victim.cmd.ProcessState.String()
		// A send begun from now on cannot have been committed by the dead
		// leader.
		l.since.Store(time.Now().UnixNano())
		next, err := cl.leader(ctx, lead, failoverWait)
		if err != nil {
			return rep, fmt.Errorf("round %d, after killing %s: %w", r+1, round.Killed, err)
		}
		round.Leader, round.NewLeader = time.Since(killed), cl.id(next)
		select {
		case at := <-l.resume:
			round.Resume = at.Sub(killed)
		case <-time.After(failoverWait):
			return rep, fmt.Errorf("round %d: no send acknowledged within %s of killing %s (errors %d, first %q)",
				r+1, failoverWait, round.Killed, l.errs.Load(), l.firstErr())
		case <-ctx.Done():
			return rep, ctx.Err()
		}
		log.Info("leader replaced", "round", r+1, "new_leader", round.NewLeader, "leader_after", round.Leader, "writes_after", round.Resume)
		t0 := time.Now()
		if err := cl.restart(ctx, lead); err != nil {
			return rep, fmt.Errorf("round %d: %w", r+1, err)
		}
		round.Restart = time.Since(t0)
		rep.Rounds = append(rep.Rounds, round)
		leads, resumes, restarts = append(leads, round.Leader), append(resumes, round.Resume), append(restarts, round.Restart)
		rep.Leader, rep.Resume, rep.Restart = spreadOf(leads), spreadOf(resumes), spreadOf(restarts)
		// Settle with every node up (the restarted one sees a leader, its
		// users' clients reconnected) before the next kill.
		now, err := cl.leader(ctx, -1, failoverWait)
		if err != nil {
			return rep, fmt.Errorf("round %d, after the restart: %w", r+1, err)
		}
		if err := waitCaughtUp(ctx, cl, now, lead); err != nil {
			return rep, fmt.Errorf("round %d: %w", r+1, err)
		}
		rep.Rounds[len(rep.Rounds)-1].CatchUp = time.Since(t0)
		catchUps = append(catchUps, time.Since(t0))
		rep.CatchUp = spreadOf(catchUps)
		if err := l.waitAcks(ctx, failoverSettle); err != nil {
			return rep, fmt.Errorf("round %d, after the restart: %w", r+1, err)
		}
	}
	return rep, nil
}

// waitCaughtUp waits until node i follows a leader and has applied
// everything the leader had committed when the wait began.
func waitCaughtUp(ctx context.Context, cl *childCluster, lead, i int) error {
	lst, err := cl.status(ctx, lead)
	if err != nil {
		return fmt.Errorf("leader status: %w", err)
	}
	want := lst.Self.Group.CommitIndex
	deadline := time.Now().Add(failoverWait)
	for {
		st, err := cl.status(ctx, i)
		g := st.Self.Group
		if err == nil && g.State == "Follower" && g.Leader != "" && g.AppliedIndex >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s did not catch up to index %d within %s (state %q, leader %q, applied %d, err %v)",
				cl.id(i), want, failoverWait, g.State, g.Leader, g.AppliedIndex, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
