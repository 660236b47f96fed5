package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/telegram/auth"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/cluster"
)

// The federation scenario: two child DCs (DC1 and DC2) of real `mtnode
// run` processes federated over the WAN pool, on loopback. Per pass (no
// added delay, then Federation.WANDelay between the DCs): a fresh
// federation; at each concurrency level, a closed loop of sends between
// pairs of users of one DC (same DC), then between pairs of a DC1 and a
// DC2 user (across); then the backlog: DC1 cut from DC2 by fault rules on every
// node, DC1 users queue up to Backlog messages for DC2 users, the cut
// heals, and the drain is timed until every message is in its
// recipient's box.

// FederationOptions configure the federation scenario. Zero values take
// the defaults noted.
type FederationOptions struct {
	// NodesPerDC is the size of each DC; 1 (so that two shared cores
	// measure the WAN path, not raft among a DC's nodes), at most 5.
	NodesPerDC int
	// Users are the concurrency levels: at each, that many users (even)
	// chat in same-DC pairs, then as many in DC1–DC2 pairs; 2, 50.
	Users []int
	// Backlog is how many messages DC1 users queue for DC2 users while
	// the DCs are cut apart; 100,000.
	Backlog int
	// WANDelay is the delay added to every mesh datagram between the DCs,
	// both ways, in the second pass; 50 ms. Negative skips that pass.
	WANDelay time.Duration
}

func (o *FederationOptions) setDefaults() {
	if o.NodesPerDC <= 0 {
		o.NodesPerDC = 1
	}
	if len(o.Users) == 0 {
		o.Users = []int{2, 50}
	}
	if o.Backlog <= 0 {
		o.Backlog = 100_000
	}
	if o.WANDelay == 0 {
		o.WANDelay = 50 * time.Millisecond
	}
}

func (o *FederationOptions) check() error {
	if o.NodesPerDC < 1 || o.NodesPerDC > 5 {
		return fmt.Errorf("loadgen: federation: %d nodes per DC, want 1 to 5", o.NodesPerDC)
	}
	for _, n := range o.Users {
		if n < 2 || n%2 != 0 {
			return fmt.Errorf("loadgen: federation users %d: want an even number, at least 2", n)
		}
	}
	if total := 3*sum(o.Users)/2 + slices.Max(o.Users); total > chatPhones {
		return fmt.Errorf("loadgen: federation: up to %d users in a DC exceed its %d test numbers", total, chatPhones)
	}
	if o.WANDelay > cluster.MaxFaultDelay {
		return fmt.Errorf("loadgen: federation: WAN delay %s above %s", o.WANDelay, cluster.MaxFaultDelay)
	}
	return nil
}

// FederationReport is the federation scenario: one pass per WAN delay,
// each on a freshly formed pair of DCs.
type FederationReport struct {
	NodesPerDC int
	Users      []int
	Backlog    int
	Passes     []FederationPass
}

// FederationPass is one federation of two fresh DCs with WANDelay added
// to every mesh datagram between them (0: none).
type FederationPass struct {
	WANDelay time.Duration
	// Form is starting both DCs until every node serves; Setup is the
	// users' keys and connections, waiting until each DC lists the other
	// in help.getConfig, sign-ups and imports.
	Form, Setup time.Duration
	// Rows are, per level, the same-DC and the cross-DC loop.
	Rows    []FedChatRow
	Backlog *FedBacklog
}

// FedChatRow is one closed loop: Users users in pairs, each sending
// messages.sendMessage to its peer, the next once the last is
// acknowledged, for Duration.
type FedChatRow struct {
	Users int
	// Cross: each pair is a DC1 and a DC2 user (every message crosses the
	// WAN); otherwise both are DC1 users.
	Cross   bool
	Elapsed time.Duration
	// Sent is acknowledged sends, Errors failed ones; Received the
	// recipients' live pushes of them up to chatReceiveGrace after the
	// last acknowledgement, Missing the acknowledged ones not pushed.
	Sent, Errors, Received, Missing int64
	FirstError                      string
	PerSec                          float64
	// Ack* is the sender's RPC latency; E2E* from just before the send to
	// the recipient's update handler (as in the chat scenario).
	AckP50, AckP99         time.Duration
	E2EP50, E2EP99, E2EMax time.Duration
	// BoxShort is, summed over users, acknowledged messages of the pair
	// missing from the user's dialog with its peer (checked after the
	// pushes, for up to fedBoxWait); BoxExtra messages there beyond
	// what was acknowledged or failed (duplicates).
	BoxShort, BoxExtra int64
	// PushDropped is both DCs' pushes dropped during the loop (see
	// FedBacklog.PushDropped).
	PushDropped float64
}

const (
	// fedSeeTimeout bounds waiting until each DC lists the other.
	fedSeeTimeout = 90 * time.Second
	// fedSendTimeout bounds one send.
	fedSendTimeout = 30 * time.Second
	// fedBacklogSendFor bounds queueing the backlog.
	fedBacklogSendFor = 5 * time.Minute
	// fedDrainMin and fedDrainPerMsg bound the drain: the larger of
	// fedDrainMin and fedDrainPerMsg per queued message.
	fedDrainMin    = 2 * time.Minute
	fedDrainPerMsg = 5 * time.Millisecond
	// fedDepthEvery and fedCountEvery space the drain's polls of DC1's
	// /metrics and of the recipients' boxes (a getHistory each).
	fedDepthEvery = 100 * time.Millisecond
	fedCountEvery = 500 * time.Millisecond
	// fedStallAfter ends the drain early when neither DC1's queue gauge
	// nor the boxes moved for this long.
	fedStallAfter = 2 * time.Minute
	// fedDepthSettle bounds waiting, before the heal, for DC1's queue
	// gauge to count every queued message.
	fedDepthSettle = 5 * time.Second
	// fedBoxWait bounds waiting, after a loop, for every box to hold the
	// loop's messages.
	fedBoxWait = 10 * time.Second
	// fedCountConcurrency bounds the getHistory calls of one count.
	fedCountConcurrency = 8
	// fedCountTimeout bounds one count of every recipient's box: reading a
	// peer of another DC during the cut may wait for the WAN read timeout.
	fedCountTimeout = 30 * time.Second
	// DC2's dropped pushes.
	mPushDropped    = "mtnode_push_dropped_total"
	mPushBusDropped = `mtnode_push_bus_frames_total{dir="dropped"}`
	// faultInjectionEnv turns on the nodes' POST /debug/faults (the
	// setting cluster.fault_injection, which has no flag).
	faultInjectionEnv = "MTNODE_CLUSTER_FAULT_INJECTION=true"
)

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

func runFederation(ctx context.Context, opts *Options, log *slog.Logger) (*FederationReport, error) {
	fo := opts.Federation
	if opts.NodeBinary == "" {
		return nil, errors.New("no node binary to start")
	}
	levels := slices.Clone(fo.Users)
	slices.Sort(levels)
	levels = slices.Compact(levels)
	rep := &FederationReport{NodesPerDC: fo.NodesPerDC, Users: levels, Backlog: fo.Backlog}
	delays := []time.Duration{0}
	if fo.WANDelay > 0 {
		delays = append(delays, fo.WANDelay)
	}
	var stalled []string
	for _, d := range delays {
		pass, err := runFederationPass(ctx, opts, levels, d, log)
		if pass != nil {
			rep.Passes = append(rep.Passes, *pass)
			if b := pass.Backlog; b != nil && !b.Drained {
				stalled = append(stalled, fmt.Sprintf("WAN delay %s: %s", d, b.FirstError))
			}
		}
		if err != nil {
			return rep, fmt.Errorf("WAN delay %s: %w", d, err)
		}
	}
	if len(stalled) > 0 {
		return rep, fmt.Errorf("backlog did not drain: %s", strings.Join(stalled, "; "))
	}
	return rep, nil
}

// childFederation is DC1 and DC2 of child nodes sharing one secrets dir
// (one CA, gossip key and server key), DC2 told --join-wan DC1's first
// node, every node with /debug/faults on.
type childFederation struct {
	root    string // temp dir of the shared secrets
	dcs     []*childCluster
	targets []*openedTarget // targets[i] is dcs[i], with its /metrics summed
}

// startFederation forms DC1, then DC2 joining it, each of n nodes.
func startFederation(ctx context.Context, opts *Options, n int, log *slog.Logger) (fed *childFederation, err error) {
	root, err := os.MkdirTemp("", "mtnode-bench-federation-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	fed = &childFederation{root: root}
	defer func() {
		if err != nil {
			fed.Close()
			fed = nil
		}
	}()
	secrets := filepath.Join(root, "secrets")
	if _, err := cluster.Keygen(secrets, time.Now()); err != nil {
		return fed, fmt.Errorf("cluster keygen: %w", err)
	}
	httpc := &http.Client{Timeout: 10 * time.Second}
	for dc := 1; dc <= 2; dc++ {
		spec := dcSpec{dc: dc, secrets: secrets, env: []string{faultInjectionEnv}}
		if dc > 1 {
			d1 := fed.dcs[0]
			spec.joinWAN = d1.id(0) + "@" + d1.mesh[0]
		}
		cl, err := startDC(ctx, opts.NodeBinary, opts.ServerProcs, n, spec, log)
		if err != nil {
			return fed, fmt.Errorf("form DC%d: %w", dc, err)
		}
		fed.dcs = append(fed.dcs, cl)
		t, err := clusterTarget(cl, httpc, true)
		if err != nil {
			return fed, fmt.Errorf("DC%d: %w", dc, err)
		}
		t.dc = dc
		fed.targets = append(fed.targets, t)
		for _, c := range cl.nodes {
			log.Info("federation node serving", "dc", dc, "node", c.nodeID, "pid", c.cmd.Process.Pid, "client_addr", c.addr)
		}
	}
	return fed, nil
}

// Close stops every node of both DCs at once and removes the secrets.
func (fed *childFederation) Close() error {
	errs := make([]error, len(fed.dcs))
	var wg sync.WaitGroup
	for i, cl := range fed.dcs {
		wg.Go(func() {
			if err := cl.Close(); err != nil {
				errs[i] = fmt.Errorf("DC%d: %w", i+1, err)
			}
		})
	}
	wg.Wait()
	fed.dcs = nil
	os.RemoveAll(fed.root)
	return errors.Join(errs...)
}

// rules is one fault rule per mesh address of DC dc: "ACTION ADDR; ...".
func (fed *childFederation) rules(action string, dc int) string {
	var rs []string
	for _, m := range fed.dcs[dc-1].mesh {
		rs = append(rs, action+" "+m)
	}
	return strings.Join(rs, "; ")
}

// setFaults programs the mesh fault rules of every node of DC dc
// (cluster.ParseFaultRules' grammar; "" heals).
func (fed *childFederation) setFaults(ctx context.Context, dc int, rules string) error {
	cl := fed.dcs[dc-1]
	for i, h := range cl.http {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+h+"/debug/faults", strings.NewReader(rules))
		if err != nil {
			return err
		}
		resp, err := cl.httpc.Do(req)
		if err != nil {
			return fmt.Errorf("faults on %s: %w", cl.id(i), err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("faults on %s: %s %s", cl.id(i), resp.Status, strings.TrimSpace(string(body)))
		}
	}
	return nil
}

// link sets the fault rules between the DCs, both ways: action ("drop",
// "delay=50ms") on every mesh address of the other DC, or none.
func (fed *childFederation) link(ctx context.Context, action string) error {
	for dc, other := range map[int]int{1: 2, 2: 1} {
		rules := ""
		if action != "" {
			rules = fed.rules(action, other)
		}
		if err := fed.setFaults(ctx, dc, rules); err != nil {
			return err
		}
	}
	return nil
}

// fedPair is two users of a loop: a sends to b, and b to a unless the
// pair is one-way (the backlog's).
type fedPair struct{ a, b *chatUser }

// fedLevel is one concurrency level's users.
type fedLevel struct {
	users       int
	same, cross []fedPair
}

// fedUsers are one pass's users: fleets[0] DC1's, fleets[1] DC2's.
type fedUsers struct {
	fleets  [2]*chatFleet
	levels  []fedLevel
	backlog []fedPair
}

func (fu *fedUsers) close() error {
	var errs []error
	for i, f := range fu.fleets {
		if f != nil {
			if err := f.close(); err != nil {
				errs = append(errs, fmt.Errorf("DC%d clients: %w", i+1, err))
			}
		}
	}
	return errors.Join(errs...)
}

func runFederationPass(ctx context.Context, opts *Options, levels []int, delay time.Duration, log *slog.Logger) (pass *FederationPass, err error) {
	fo := opts.Federation
	pass = &FederationPass{WANDelay: delay}
	log.Info("forming a federation of two DCs", "nodes_per_dc", fo.NodesPerDC, "wan_delay", delay)
	t0 := time.Now()
	fed, err := startFederation(ctx, opts, fo.NodesPerDC, log)
	if err != nil {
		return pass, err
	}
	defer func() {
		if cerr := fed.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if delay > 0 {
		if err := fed.link(ctx, "delay="+delay.String()); err != nil {
			return pass, err
		}
	}
	pass.Form = time.Since(t0)
	t0 = time.Now()
	fu, err := setupFederationUsers(ctx, opts, fed, levels, log)
	if fu != nil {
		defer func() {
			if cerr := fu.close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
	}
	if err != nil {
		return pass, fmt.Errorf("setup: %w", err)
	}
	pass.Setup = time.Since(t0)
	log.Info("federation users ready", "form", pass.Form, "setup", pass.Setup)
	for _, lv := range fu.levels {
		for _, cross := range []bool{false, true} {
			pairs := lv.same
			if cross {
				pairs = lv.cross
			}
			log.Info("federation chat", "users", lv.users, "cross_dc", cross, "wan_delay", delay, "duration", opts.Duration)
			row, err := fedChat(ctx, fed, pairs, opts.Duration, opts.MaxOps)
			row.Users, row.Cross = lv.users, cross
			pass.Rows = append(pass.Rows, row)
			if err != nil {
				return pass, fmt.Errorf("%d users, cross-DC %v: %w", lv.users, cross, err)
			}
		}
	}
	healTo := ""
	if delay > 0 {
		healTo = "delay=" + delay.String()
	}
	pass.Backlog, err = fedBacklog(ctx, fed, fu.backlog, fo.Backlog, healTo, log)
	return pass, err
}

// setupFederationUsers makes one pass's users: for each level L, L/2
// pairs of users of one DC (same DC; alternately DC1 and DC2) and L/2
// pairs of a DC1 and a DC2 user (across); then as many backlog pairs (a DC1 sender, a DC2 recipient)
// as the largest level. Each user has its own key, made on and connected
// to a node of its home DC (round-robin), signs up with a test number of
// that DC and imports its peer, once both DCs list each other.
func setupFederationUsers(ctx context.Context, opts *Options, fed *childFederation, levels []int, log *slog.Logger) (fu *fedUsers, err error) {
	ctx, cancel := context.WithTimeout(ctx, opts.SetupTimeout)
	defer cancel()
	var phones [2][]string
	alloc := func(dc, n int) []int {
		var idx []int
		for range n {
			idx = append(idx, len(phones[dc-1]))
			phones[dc-1] = append(phones[dc-1], fmt.Sprintf("99966%d%04d", dc, len(phones[dc-1])))
		}
		return idx
	}
	// Same-DC pairs alternate between DC1 and DC2 (pair k in DC k%2+1),
	// so that, as with the cross-DC pairs, both DCs carry the load.
	type plan struct {
		same           [][2]int // DC index (0, 1) and user index
		cross1, cross2 []int
	}
	plans := make([]plan, len(levels))
	for i, n := range levels {
		for k := range n / 2 {
			d := k % 2
			for _, u := range alloc(d+1, 2) {
				plans[i].same = append(plans[i].same, [2]int{d, u})
			}
		}
		plans[i].cross1, plans[i].cross2 = alloc(1, n/2), alloc(2, n/2)
	}
	senders := slices.Max(levels)
	bl1, bl2 := alloc(1, senders), alloc(2, senders)

	fu = &fedUsers{}
	for d := range 2 {
		t := &fed.targets[d].target
		log.Info("creating federation users", "dc", t.dc, "users", len(phones[d]))
		keys, err := makeUserKeys(ctx, t, len(phones[d]), opts.SetupConcurrency)
		if err != nil {
			return fu, fmt.Errorf("DC%d: %w", t.dc, err)
		}
		fctx, fcancel := context.WithCancel(context.Background())
		f := &chatFleet{ctx: fctx, cancel: fcancel}
		for i, p := range phones[d] {
			f.users = append(f.users, &chatUser{idx: i, phone: p, peerI: -1})
		}
		fu.fleets[d] = f
		if err := f.connect(ctx, t, opts.Transport, keys, opts.SetupConcurrency); err != nil {
			return fu, fmt.Errorf("DC%d: connect: %w", t.dc, err)
		}
	}
	if err := waitFederated(ctx, fu.fleets[0].users[0], 2); err != nil {
		return fu, fmt.Errorf("DC1: %w", err)
	}
	if err := waitFederated(ctx, fu.fleets[1].users[0], 1); err != nil {
		return fu, fmt.Errorf("DC2: %w", err)
	}
	for d, f := range fu.fleets {
		dc := d + 1
		if err := f.each(ctx, opts.SetupConcurrency, func(ctx context.Context, u *chatUser) error {
			if err := auth.NewFlow(auth.TestUser(u.phone, dc), auth.SendCodeOptions{}).Run(ctx, u.c.Auth()); err != nil {
				return fmt.Errorf("sign in: %w", err)
			}
			return nil
		}); err != nil {
			return fu, fmt.Errorf("DC%d: %w", dc, err)
		}
	}
	u1, u2 := fu.fleets[0].users, fu.fleets[1].users
	user := func(x [2]int) *chatUser { return fu.fleets[x[0]].users[x[1]] }
	peerOf := map[*chatUser]*chatUser{}
	pair := func(a, b *chatUser) fedPair {
		peerOf[a], peerOf[b] = b, a
		return fedPair{a, b}
	}
	for i, p := range plans {
		lv := fedLevel{users: levels[i]}
		for k := 0; k+1 < len(p.same); k += 2 {
			lv.same = append(lv.same, pair(user(p.same[k]), user(p.same[k+1])))
		}
		for k := range p.cross1 {
			lv.cross = append(lv.cross, pair(u1[p.cross1[k]], u2[p.cross2[k]]))
		}
		fu.levels = append(fu.levels, lv)
	}
	for k := range bl1 {
		// The recipient imports its sender too: its peer for getHistory.
		fu.backlog = append(fu.backlog, pair(u1[bl1[k]], u2[bl2[k]]))
	}
	for d, f := range fu.fleets {
		if err := f.each(ctx, opts.SetupConcurrency, func(ctx context.Context, u *chatUser) error {
			peer, err := importPeer(ctx, u, peerOf[u].phone)
			u.peer = peer
			return err
		}); err != nil {
			return fu, fmt.Errorf("DC%d: %w", d+1, err)
		}
	}
	return fu, nil
}

// listsDC reports whether help.getConfig, asked as u, lists DC other.
func listsDC(ctx context.Context, u *chatUser, other int) (bool, error) {
	cfg, err := u.api.HelpGetConfig(ctx)
	if err != nil {
		return false, fmt.Errorf("help.getConfig: %w", err)
	}
	for _, o := range cfg.DCOptions {
		if o.ID == other {
			return true, nil
		}
	}
	return false, nil
}

// waitFederated polls help.getConfig as u until it lists DC other.
func waitFederated(ctx context.Context, u *chatUser, other int) error {
	deadline := time.Now().Add(fedSeeTimeout)
	var last error
	for {
		ok, err := listsDC(ctx, u, other)
		if ok {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("help.getConfig lists no address of DC%d", other)
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("not federated with DC%d within %s: %w", other, fedSeeTimeout, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("federated with DC%d: %w (last: %v)", other, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// importPeer imports phone as u's contact and returns the user as a peer.
func importPeer(ctx context.Context, u *chatUser, phone string) (*tg.InputPeerUser, error) {
	res, err := u.api.ContactsImportContacts(ctx, []tg.InputPhoneContact{{ClientID: 1, Phone: phone, FirstName: "peer"}})
	if err != nil {
		return nil, fmt.Errorf("import contact %s: %w", phone, err)
	}
	for _, uc := range res.Users {
		if x, ok := uc.(*tg.User); ok && x.Phone == phone {
			return &tg.InputPeerUser{UserID: x.ID, AccessHash: x.AccessHash}, nil
		}
	}
	return nil, fmt.Errorf("import contact %s: no such user in %d returned", phone, len(res.Users))
}

// sendNow sends u's peer a message whose text is the send time, as the
// chat scenario does, and returns when it was begun.
func sendNow(ctx context.Context, u *chatUser) (time.Time, error) {
	t0 := time.Now()
	sctx, cancel := context.WithTimeout(ctx, fedSendTimeout)
	defer cancel()
	_, err := u.api.MessagesSendMessage(sctx, &tg.MessagesSendMessageRequest{
		Peer: u.peer, Message: strconv.FormatInt(t0.UnixNano(), 10), RandomID: rand.Int64(),
	})
	return t0, err
}

// fedChat runs every user of pairs in a closed loop of sends to its peer
// for dur (at most maxOps sends in all), then waits up to
// chatReceiveGrace for the pushes and measures as chatPhase does; then
// it checks every user's box: its dialog with its peer must hold what
// the two of them had acknowledged. Each user is in one loop only, so
// its counters and dialog start at zero.
func fedChat(ctx context.Context, fed *childFederation, pairs []fedPair, dur time.Duration, maxOps int) (FedChatRow, error) {
	var row FedChatRow
	type leg struct {
		from, to *chatUser
		failed   atomic.Int64
	}
	var legs []*leg
	for _, p := range pairs {
		legs = append(legs, &leg{from: p.a, to: p.b}, &leg{from: p.b, to: p.a})
	}
	if len(legs) == 0 {
		return row, errors.New("no users")
	}
	for _, l := range legs {
		l.to.measure.Store(true)
	}
	drops0 := fed.pushDrops(ctx)
	perUser := max(maxOps/len(legs), 1)
	var (
		errOnce sync.Once
		mu      sync.Mutex
		acks    hist
		wg      sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(dur)
	for _, l := range legs {
		wg.Go(func() {
			var h hist
			defer func() { mu.Lock(); acks.merge(&h); mu.Unlock() }()
			for i := 0; i < perUser && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				t0, err := sendNow(ctx, l.from)
				if err != nil {
					l.failed.Add(1)
					errOnce.Do(func() { row.FirstError = err.Error() })
					continue
				}
				h.record(time.Since(t0))
				l.from.acked.Add(1)
			}
		})
	}
	wg.Wait()
	row.Elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return row, err
	}
	got := func() (n int64) {
		for _, l := range legs {
			n += l.to.received.Load()
		}
		return n
	}
	for _, l := range legs {
		row.Sent += l.from.acked.Load()
		row.Errors += l.failed.Load()
	}
	graceEnd := time.Now().Add(chatReceiveGrace)
	for got() < row.Sent && time.Now().Before(graceEnd) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	var e2e hist
	for _, l := range legs {
		l.to.measure.Store(false)
		r := l.to.received.Load()
		row.Received += r
		row.Missing += max(l.from.acked.Load()-r, 0)
		l.to.mu.Lock()
		e2e.merge(&l.to.e2e)
		l.to.mu.Unlock()
		if b := l.to.bad.Load(); b > 0 && row.FirstError == "" {
			row.FirstError = fmt.Sprintf("%d pushed messages without a send time", b)
		}
	}
	row.PushDropped = fed.pushDrops(ctx) - drops0
	if row.Sent == 0 {
		return row, fmt.Errorf("no message was acknowledged: %s", row.FirstError)
	}
	row.PerSec = perSec(float64(row.Sent), row.Elapsed)
	row.AckP50, row.AckP99 = acks.quantile(0.5), acks.quantile(0.99)
	row.E2EP50, row.E2EP99, row.E2EMax = e2e.quantile(0.5), e2e.quantile(0.99), e2e.max

	// The boxes: leg 2k and 2k+1 are one pair, both of whose dialogs hold
	// the pair's messages both ways.
	users := make([]*chatUser, len(legs))
	want := make([]int64, len(legs))
	slack := make([]int64, len(legs))
	for i, l := range legs {
		users[i] = l.from
		p := legs[i^1]
		want[i] = l.from.acked.Load() + p.from.acked.Load()
		slack[i] = l.failed.Load() + p.failed.Load()
	}
	boxWait := time.Now().Add(fedBoxWait)
	for {
		counts, err := boxCounts(ctx, users)
		if err != nil {
			return row, fmt.Errorf("boxes: %w", err)
		}
		row.BoxShort, row.BoxExtra = 0, 0
		for i, c := range counts {
			row.BoxShort += max(want[i]-c, 0)
			row.BoxExtra += max(c-want[i]-slack[i], 0)
		}
		if row.BoxShort == 0 || time.Now().After(boxWait) || ctx.Err() != nil {
			return row, nil
		}
		time.Sleep(fedCountEvery)
	}
}

// pushDrops is the pushes both DCs dropped so far: a connection's queue
// was full, or a push bus peer's (summed over the nodes).
func (fed *childFederation) pushDrops(ctx context.Context) float64 {
	var n float64
	for _, t := range fed.targets {
		if s, err := t.metrics.scrape(ctx); err == nil {
			n += s[mPushDropped] + s[mPushBusDropped]
		}
	}
	return n
}
