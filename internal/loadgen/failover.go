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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/tg"
)

// FailoverReport is the failover scenario: a 3-node child DC under a
// steady chat load; each round finds the node that leads the most raft
// groups (the metadata group 0, the directory, group 1, and the users'
// boxes, groups 2..17),
// kills it with SIGKILL, measures until every group it led has a leader
// on another node and until every user on a surviving node has had a send
// begun after the kill acknowledged, then restarts the killed node on its
// data dir and ports and waits until it serves and has caught up.
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
	// Groups is how many raft groups the DC has.
	Groups int
	Rounds []FailoverRound
	// Leader is the time from SIGKILL of the node leading the most groups
	// until, for every group it led, another node reports itself that
	// group's Leader in /cluster/status (the survivors polled every 10
	// ms); Resume until every user whose client talks to a surviving node
	// has had a send acknowledged that began after the killed process was
	// reaped (the latest of those users' first such acknowledgements);
	// Restart from restarting the killed node until it logged "mtnode
	// serving" again.
	Leader, Resume, Restart Spread
	// CatchUp is from the restart until, in every group the restarted node
	// is a voter of, it sees a leader and has applied at least what that
	// group's leader had applied once it served.
	CatchUp Spread
	// Sent and Errors count every send of the whole scenario.
	Sent, Errors int64
	FirstError   string
}

// FailoverRound is one kill of the node leading the most groups.
type FailoverRound struct {
	// Killed is the node that led the most groups; NewLeader the node that
	// took over the most of them (ties: the lowest index).
	Killed, NewLeader string
	KilledBy          string // the killed process's exit: "signal: killed"
	// Groups is how many groups Killed led (by its own status just before
	// the kill), all of which moved to other nodes.
	Groups int
	// Writers is how many users' resumption Resume waits for: the users
	// whose client talks to a surviving node (the killed node's users
	// cannot send until it is back).
	Writers                 int
	Leader, Resume, Restart time.Duration
	// CatchUp is from the restart until the node, in every group it is a
	// voter of, saw a leader and had applied what that group's leader had
	// applied once it served.
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
	acks  atomic.Int64
	errs  atomic.Int64
	errMu sync.Mutex
	first string

	// resMu guards the watch for resumed writes of the current round.
	resMu sync.Mutex
	// since is when the watch began (UnixNano; 0: not watching): only a
	// send begun at or after it counts.
	since int64
	// waiting are the users (by index) without such an acknowledgement
	// yet, last the latest first acknowledgement of those who have one.
	waiting map[int]bool
	last    time.Time
	// resume receives last once no user is waiting.
	resume chan time.Time
}

// watch starts watching for resumed writes: from since on, until each of
// users had a send begun at or after since acknowledged.
func (l *failoverLoad) watch(since time.Time, users []int) {
	l.resMu.Lock()
	defer l.resMu.Unlock()
	l.since, l.last = since.UnixNano(), since
	l.waiting = make(map[int]bool, len(users))
	for _, u := range users {
		l.waiting[u] = true
	}
	if len(l.waiting) == 0 {
		l.since = 0
		l.resume <- since
	}
}

// acked notes that user u's send begun at t0 was acknowledged at at.
func (l *failoverLoad) acked(u int, t0, at time.Time) {
	l.resMu.Lock()
	defer l.resMu.Unlock()
	if l.since == 0 || t0.UnixNano() < l.since || !l.waiting[u] {
		return
	}
	delete(l.waiting, u)
	if at.After(l.last) {
		l.last = at
	}
	if len(l.waiting) == 0 {
		l.since = 0
		select {
		case l.resume <- l.last:
		default: // cannot happen: one value per watch, each one taken
		}
	}
}

// pending are the users the current watch still waits for.
func (l *failoverLoad) pending() []int {
	l.resMu.Lock()
	defer l.resMu.Unlock()
	var us []int
	for u := range l.waiting {
		us = append(us, u)
	}
	slices.Sort(us)
	return us
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
					l.acked(u.idx, t0, now)
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
		lead, led, groups, err := cl.mostLeading(ctx, failoverWait)
		if err != nil {
			return rep, fmt.Errorf("round %d: %w", r+1, err)
		}
		rep.Groups = groups
		round := FailoverRound{Killed: cl.id(lead), Groups: len(led)}
		victim := cl.nodes[lead]
		// The killed node's users cannot send until it is back; resumption
		// waits for everyone else.
		var writers []int
		for _, u := range f.users {
			if t.addrFor(u.idx) != victim.addr {
				writers = append(writers, u.idx)
			}
		}
		round.Writers = len(writers)
		log.Info("killing the node leading the most groups", "round", r+1, "node", round.Killed,
			"pid", victim.cmd.Process.Pid, "groups", led)
		killed := time.Now()
		cl.kill(lead) // SIGKILL; returns once the process is reaped
		round.KilledBy = victim.cmd.ProcessState.String()
		// A send begun from now on cannot have been committed by the dead
		// node.
		l.watch(time.Now(), writers)
		by, err := cl.leaders(ctx, lead, led, failoverWait)
		if err != nil {
			return rep, fmt.Errorf("round %d, after killing %s: %w", r+1, round.Killed, err)
		}
		round.Leader = time.Since(killed)
		took := make([]int, len(cl.nodes))
		for _, g := range led {
			took[by[g]]++
		}
		next := 0
		for i, n := range took {
			if n > took[next] {
				next = i
			}
		}
		round.NewLeader = cl.id(next)
		select {
		case at := <-l.resume:
			round.Resume = at.Sub(killed)
		case <-time.After(failoverWait):
			return rep, fmt.Errorf("round %d: users %v had no send begun after killing %s acknowledged within %s (errors %d, first %q)",
				r+1, l.pending(), round.Killed, failoverWait, l.errs.Load(), l.firstErr())
		case <-ctx.Done():
			return rep, ctx.Err()
		}
		log.Info("leaders replaced", "round", r+1, "groups", len(led), "new_leader", round.NewLeader,
			"leaders_after", round.Leader, "writes_after", round.Resume)
		t0 := time.Now()
		if err := cl.restart(ctx, lead); err != nil {
			return rep, fmt.Errorf("round %d: %w", r+1, err)
		}
		round.Restart = time.Since(t0)
		rep.Rounds = append(rep.Rounds, round)
		leads, resumes, restarts = append(leads, round.Leader), append(resumes, round.Resume), append(restarts, round.Restart)
		rep.Leader, rep.Resume, rep.Restart = spreadOf(leads), spreadOf(resumes), spreadOf(restarts)
		// Settle with every node up (the restarted one caught up, its
		// users' clients reconnected) before the next kill.
		if err := waitCaughtUp(ctx, cl, lead); err != nil {
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

// waitCaughtUp waits until node i, in every group it is a voter of (by
// the group's leader), sees a leader and has applied at least what the
// group's leader had applied when the wait began. The mark is the
// leader's applied index, not its commit index: raft's own entries (a new
// leader's no-op, configuration changes) reach no state machine, and
// where a node's applied index leaves them out, an idle group's stays
// below its commit index for good.
func waitCaughtUp(ctx context.Context, cl *childCluster, i int) error {
	deadline := time.Now().Add(failoverWait)
	// want[g] is the mark of group g, for the groups node i votes in.
	var want map[int]uint64
	for want == nil {
		sts, err := cl.sweep(ctx)
		if n := groupCount(sts); n > 0 {
			by := leadersIn(sts)
			if len(by) == n {
				want = map[int]uint64{}
				for g, l := range by {
					gs := sts[l].Self.Groups[g]
					if slices.Contains(gs.Voters, cl.id(i)) {
						want[g] = gs.AppliedIndex
					}
				}
				break
			}
			err = fmt.Errorf("%d of %d groups have a leader (last error: %v)", len(by), n, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: leaders of every group within %s: %v", cl.id(i), failoverWait, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	for {
		st, err := cl.status(ctx, i)
		var behind []string
		if err == nil {
			for g, w := range want {
				if g >= len(st.Self.Groups) {
					behind = append(behind, fmt.Sprintf("group %d: not listed", g))
					continue
				}
				if gs := st.Self.Groups[g]; gs.Leader == "" || gs.AppliedIndex < w {
					behind = append(behind, fmt.Sprintf("group %d: leader %q, applied %d of %d", g, gs.Leader, gs.AppliedIndex, w))
				}
			}
			if len(behind) == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			slices.Sort(behind)
			return fmt.Errorf("node %s did not catch up within %s (err %v): %s",
				cl.id(i), failoverWait, err, strings.Join(behind, "; "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
