package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/session"
	"github.com/gotd/td/telegram"
	"github.com/gotd/td/telegram/auth"
	"github.com/gotd/td/tg"

	"github.com/mtnode/mtnode/internal/mtclient"
)

// ChatReport is one chat level: Users signed-in gotd clients in pairs
// (user i writes to user i^1), each running a closed loop of
// messages.sendMessage while receiving its peer's messages as live pushes.
type ChatReport struct {
	// Nodes is the size of the DC under test: users are spread round-robin
	// over its nodes (user i on node i mod Nodes), so with more than one
	// node a sender and its peer sit on different nodes.
	Nodes int
	Users int
	// Setup times: creating one permanent auth key per user (KeysSetup),
	// connecting the clients (Connect), signing every user up or in with
	// its test number (SignIn: auth.sendCode, auth.signIn, auth.signUp),
	// and each user importing its peer by phone (Import).
	KeysSetup, Connect, SignIn, Import time.Duration
	Elapsed                            time.Duration
	// Sent is the messages acknowledged (their RPC answer returned; the
	// node commits durably before answering). Errors are failed sends.
	Sent, Errors int64
	FirstError   string
	// Received is the peers' live pushes carrying a message of this
	// phase (updateShortMessage or updateNewMessage), counted up to
	// ReceiveGrace after the last acknowledgement; Missing is, summed
	// over receivers, acknowledged messages of its peer it never got
	// pushed. No getDifference is made: missing pushes stay missing.
	Received, Missing int64
	ReceiveGrace      time.Duration
	// PerSec is Sent / Elapsed.
	PerSec float64
	// Ack* is the sender's RPC latency; E2E* the time from just before
	// the send to the receiver's update handler (the send time travels in
	// the message text, both ends share this machine's clock).
	AckP50, AckP99, AckMax time.Duration
	E2EP50, E2EP99, E2EMax time.Duration
	// ServerCPU and ServerCPUNet are the node's CPU over the send window,
	// raw and net of its idle use; ServerCPUPerMsg is ServerCPUNet / Sent.
	// ServerProcs is the node's GOMAXPROCS, summed over the DC's nodes.
	ServerProcs             int
	ServerCPU, ServerCPUNet time.Duration
	ServerCPUPerMsg         time.Duration
	ClientCPU               time.Duration
	// Redials is connections the node accepted during the window.
	Redials float64
	// Floor1 and FloorN are raw Badger commits of one message's writes
	// with SyncWrites, by one writer and by Users writers.
	Floor1, FloorN *BadgerFloor
	// Ratio1 and RatioN are PerSec over Floor1 and FloorN commits/s.
	Ratio1, RatioN float64
}

// chatReceiveGrace bounds waiting, after the last acknowledgement, for
// pushes still in flight.
const chatReceiveGrace = 5 * time.Second

// chatSendTimeout bounds one send past the window.
const chatSendTimeout = 60 * time.Second

// chatPhones is how many test numbers 99966 X YYYY one DC has.
const chatPhones = 10000

// chatUser is one signed-in user on its own connection and auth key.
type chatUser struct {
	idx   int
	phone string
	c     *telegram.Client
	api   *tg.Client
	peer  *tg.InputPeerUser
	self  int64
	peerI int

	acked    atomic.Int64
	received atomic.Int64
	bad      atomic.Int64 // pushed messages whose text is not a send time
	measure  atomic.Bool  // count pushes only once the phase started

	mu  sync.Mutex
	e2e hist
}

// handle is the raw update handler: counts the peer's live messages.
func (u *chatUser) handle(_ context.Context, up tg.UpdatesClass) error {
	now := time.Now().UnixNano()
	var ups []tg.UpdateClass
	switch x := up.(type) {
	case *tg.UpdateShort: // gotd's form of updateShortMessage
		ups = []tg.UpdateClass{x.Update}
	case *tg.Updates:
		ups = x.Updates
	case *tg.UpdatesCombined:
		ups = x.Updates
	}
	for _, v := range ups {
		nm, ok := v.(*tg.UpdateNewMessage)
		if !ok {
			continue
		}
		m, ok := nm.Message.(*tg.Message)
		if !ok || m.Out || !u.measure.Load() {
			continue
		}
		sent, err := strconv.ParseInt(m.Message, 10, 64)
		if err != nil {
			u.bad.Add(1)
			continue
		}
		u.received.Add(1)
		u.mu.Lock()
		u.e2e.record(time.Duration(now - sent))
		u.mu.Unlock()
	}
	return nil
}

// chatFleet owns the users' clients; close stops them all.
type chatFleet struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	users  []*chatUser
	lost   atomic.Int64
	errMu  sync.Mutex
	err    error
}

func (f *chatFleet) close() error {
	f.cancel()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeTimeout):
		return fmt.Errorf("chat clients did not stop within %s", closeTimeout)
	}
	if n := f.lost.Load(); n > 0 {
		f.errMu.Lock()
		defer f.errMu.Unlock()
		return fmt.Errorf("%d chat clients lost their connection: %w", n, f.err)
	}
	return nil
}

// connect starts a client per key and returns when all are ready.
func (f *chatFleet) connect(ctx context.Context, t *target, tr mtclient.Transport, keys []session.Data, concurrency int) error {
	ready := make(chan struct{}, len(keys))
	failed := make(chan error, len(keys))
	sem := make(chan struct{}, concurrency)
	for i := range keys {
		u := f.users[i]
		store := new(session.StorageMemory)
		if err := (&session.Loader{Storage: store}).Save(ctx, &keys[i]); err != nil {
			return fmt.Errorf("store session: %w", err)
		}
		c, err := mtclient.New(mtclient.Options{
			Addr: t.addrFor(i), DC: t.dc, PublicKeyFile: t.pubFile, Transport: tr,
			Telegram: telegram.Options{SessionStorage: store, UpdateHandler: telegram.UpdateHandlerFunc(u.handle)},
		})
		if err != nil {
			return err
		}
		u.c, u.api = c, c.API()
		select {
		case sem <- struct{}{}:
		case err := <-failed:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			var isReady atomic.Bool
			err := c.Run(f.ctx, func(ctx context.Context) error {
				isReady.Store(true)
				<-sem
				ready <- struct{}{}
				<-ctx.Done()
				return nil
			})
			switch {
			case !isReady.Load():
				<-sem
				if err == nil {
					err = errors.New("client stopped before it was ready")
				}
				failed <- fmt.Errorf("user %d: %w", u.idx, err)
			case f.ctx.Err() == nil:
				f.lost.Add(1)
				f.errMu.Lock()
				if f.err == nil {
					f.err = err
				}
				f.errMu.Unlock()
			}
		}()
	}
	for range keys {
		select {
		case <-ready:
		case err := <-failed:
			return err
		case <-ctx.Done():
			return fmt.Errorf("connect: %w", ctx.Err())
		}
	}
	return nil
}

// each runs fn for every user, at most concurrency at once, and returns
// the first error.
func (f *chatFleet) each(ctx context.Context, concurrency int, fn func(context.Context, *chatUser) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, concurrency)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, u := range f.users {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, u); err != nil {
				once.Do(func() { first = fmt.Errorf("user %d (%s): %w", u.idx, u.phone, err); cancel() })
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func runChats(ctx context.Context, rs *runState) ([]ChatReport, error) {
	levels := slices.Clone(rs.opts.ChatUsers)
	slices.Sort(levels)
	levels = slices.Compact(levels)
	var reps []ChatReport
	next := 0 // first unused test number: each level signs up new users
	for _, n := range levels {
		if next+n > chatPhones {
			return reps, fmt.Errorf("chat: %d users in all exceed the %d test numbers", next+n, chatPhones)
		}
		rep, err := runChatLevel(ctx, rs, n, next)
		next += n
		if rep != nil {
			rep.derive()
			reps = append(reps, *rep)
		}
		if err != nil {
			return reps, fmt.Errorf("%d users: %w", n, err)
		}
	}
	return reps, nil
}

func (c *ChatReport) derive() {
	if c.Floor1 != nil && c.Floor1.PerSec > 0 {
		c.Ratio1 = c.PerSec / c.Floor1.PerSec
	}
	if c.FloorN != nil && c.FloorN.PerSec > 0 {
		c.RatioN = c.PerSec / c.FloorN.PerSec
	}
}

func runChatLevel(ctx context.Context, rs *runState, n, first int) (rep *ChatReport, err error) {
	t, opts, log := rs.t, rs.opts, rs.log
	rep = &ChatReport{Nodes: max(len(t.addrs), 1), Users: n, ReceiveGrace: chatReceiveGrace, ServerProcs: t.procs}

	// The storage floor first, while the node is idle.
	budget := min(max(opts.Duration/2, 200*time.Millisecond), 5*time.Second)
	log.Info("measuring the badger floor", "writers", []int{1, n}, "budget", budget)
	if rep.Floor1, err = runBadgerFloor(ctx, 1, budget, opts.MaxOps); err != nil {
		return nil, fmt.Errorf("badger floor: %w", err)
	}
	if rep.FloorN, err = runBadgerFloor(ctx, n, budget, opts.MaxOps); err != nil {
		return nil, fmt.Errorf("badger floor: %w", err)
	}

	f, err := setupChat(ctx, rs, n, first, rep)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := f.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	log.Info("chatting", "users", n, "nodes", rep.Nodes, "duration", opts.Duration)
	if err := chatPhase(ctx, rs, f, rep); err != nil {
		return rep, err
	}
	return rep, nil
}

// setupChat makes n users (test numbers from first on) with their keys,
// connects, signs them up and has each import its peer, recording the
// times in rep. The caller closes the fleet.
func setupChat(ctx context.Context, rs *runState, n, first int, rep *ChatReport) (f *chatFleet, err error) {
	t, opts, log := rs.t, rs.opts, rs.log
	setupCtx, cancelSetup := context.WithTimeout(ctx, opts.SetupTimeout)
	defer cancelSetup()
	log.Info("creating chat users' auth keys", "users", n)
	t0 := time.Now()
	keys, err := makeUserKeys(setupCtx, t, n, opts.SetupConcurrency)
	if err != nil {
		return nil, err
	}
	rep.KeysSetup = time.Since(t0)

	fctx, fcancel := context.WithCancel(context.Background())
	fl := &chatFleet{ctx: fctx, cancel: fcancel}
	f = fl
	defer func() {
		if err != nil {
			if cerr := fl.close(); cerr != nil {
				log.Warn("closing chat clients after a failed setup", "err", cerr)
			}
		}
	}()
	for i := range n {
		f.users = append(f.users, &chatUser{
			idx: i, phone: fmt.Sprintf("99966%d%04d", t.dc, first+i), peerI: i ^ 1,
		})
	}
	t0 = time.Now()
	if err := f.connect(setupCtx, t, opts.Transport, keys, opts.SetupConcurrency); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	rep.Connect = time.Since(t0)

	log.Info("signing chat users in", "users", n)
	t0 = time.Now()
	if err := f.each(setupCtx, opts.SetupConcurrency, func(ctx context.Context, u *chatUser) error {
		if err := auth.NewFlow(auth.TestUser(u.phone, t.dc), auth.SendCodeOptions{}).Run(ctx, u.c.Auth()); err != nil {
			return fmt.Errorf("sign in: %w", err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	rep.SignIn = time.Since(t0)

	t0 = time.Now()
	if err := f.each(setupCtx, opts.SetupConcurrency, func(ctx context.Context, u *chatUser) error {
		peer := f.users[u.peerI]
		res, err := u.api.ContactsImportContacts(ctx, []tg.InputPhoneContact{{ClientID: 1, Phone: peer.phone, FirstName: "peer"}})
		if err != nil {
			return fmt.Errorf("import contact: %w", err)
		}
		for _, uc := range res.Users {
			if x, ok := uc.(*tg.User); ok && x.Phone == peer.phone {
				u.peer = &tg.InputPeerUser{UserID: x.ID, AccessHash: x.AccessHash}
				return nil
			}
		}
		return fmt.Errorf("import contact %s: no such user in %d returned", peer.phone, len(res.Users))
	}); err != nil {
		return nil, err
	}
	rep.Import = time.Since(t0)
	log.Info("chat setup done", "users", n, "keys", rep.KeysSetup, "connect", rep.Connect, "sign_in", rep.SignIn, "import", rep.Import)
	return f, nil
}

func chatPhase(ctx context.Context, rs *runState, f *chatFleet, rep *ChatReport) error {
	t, opts := rs.t, rs.opts
	win, err := startCPUWindow(ctx, t.metrics)
	if err != nil {
		return err
	}
	cpu0, cpuOK := selfCPU()
	perUser := max(opts.MaxOps/len(f.users), 1)
	var (
		failed  atomic.Int64
		errOnce sync.Once
		mu      sync.Mutex
		acks    hist
		wg      sync.WaitGroup
		gate    = make(chan struct{})
	)
	for _, u := range f.users {
		u.measure.Store(true)
	}
	var deadline time.Time
	for _, u := range f.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			var h hist
			defer func() { mu.Lock(); acks.merge(&h); mu.Unlock() }()
			sctx, cancel := context.WithDeadline(ctx, deadline.Add(chatSendTimeout))
			defer cancel()
			for i := 0; i < perUser && time.Now().Before(deadline); i++ {
				t0 := time.Now()
				_, err := u.api.MessagesSendMessage(sctx, &tg.MessagesSendMessageRequest{
					Peer: u.peer, Message: strconv.FormatInt(t0.UnixNano(), 10), RandomID: rand.Int64(),
				})
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { rep.FirstError = err.Error() })
					if sctx.Err() != nil {
						return
					}
					continue
				}
				h.record(time.Since(t0))
				u.acked.Add(1)
			}
		}()
	}
	start := time.Now()
	deadline = start.Add(opts.Duration)
	close(gate)
	wg.Wait()
	rep.Elapsed = time.Since(start)
	if cpu1, ok := selfCPU(); ok && cpuOK {
		rep.ClientCPU = cpu1 - cpu0
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var after samples
	if win != nil {
		a, raw, net, err := win.end(ctx, t.metrics, t.idleCPU)
		if err != nil {
			return err
		}
		after = a
		rep.ServerCPU, rep.ServerCPUNet = raw, net
	}
	for _, u := range f.users {
		rep.Sent += u.acked.Load()
	}
	rep.Errors = failed.Load()
	// Pushes still in flight: wait until every acknowledged message is
	// seen, or the grace ends.
	graceEnd := time.Now().Add(chatReceiveGrace)
	for {
		var got int64
		for _, u := range f.users {
			got += u.received.Load()
		}
		if got >= rep.Sent || time.Now().After(graceEnd) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var e2e hist
	for _, u := range f.users {
		u.measure.Store(false)
		got := u.received.Load()
		rep.Received += got
		rep.Missing += max(f.users[u.peerI].acked.Load()-got, 0)
		u.mu.Lock()
		e2e.merge(&u.e2e)
		u.mu.Unlock()
		if b := u.bad.Load(); b > 0 && rep.FirstError == "" {
			rep.FirstError = fmt.Sprintf("%d pushed messages without a send time", b)
		}
	}
	if rep.Sent == 0 {
		return fmt.Errorf("no message was acknowledged: %s", rep.FirstError)
	}
	rep.PerSec = perSec(float64(rep.Sent), rep.Elapsed)
	rep.AckP50, rep.AckP99, rep.AckMax = acks.quantile(0.5), acks.quantile(0.99), acks.max
	rep.E2EP50, rep.E2EP99, rep.E2EMax = e2e.quantile(0.5), e2e.quantile(0.99), e2e.max
	if win != nil {
		rep.ServerCPUPerMsg = rep.ServerCPUNet / time.Duration(rep.Sent)
		rep.Redials = connsTotal(after) - connsTotal(win.before)
	}
	return nil
}
