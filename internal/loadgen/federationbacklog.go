package loadgen

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotd/td/tg"
)

// The federation scenario's backlog: DC1 cut from DC2, a queue built up
// in DC1's outboxes, and its drain after the heal, timed by DC1's queue
// gauge and by the recipients' boxes.

// FedBacklog is the backlog of one pass: Senders DC1 users, each with
// its own DC2 recipient, queue messages while DC1 is cut from DC2 (every
// mesh datagram between them dropped by every node), then the cut heals.
type FedBacklog struct {
	Senders int
	// Target is the messages asked for; Queued the sends acknowledged
	// during the cut (committed in DC1, waiting in its outboxes), Errors
	// the failed ones (their outcome unknown). Queueing stops at Target
	// or after SendLimit.
	Target         int
	Queued, Errors int64
	FirstError     string
	SendLimit      time.Duration
	// SendFor is from the cut to the last acknowledgement; QueuePerSec
	// is Queued / SendFor; Ack* the senders' RPC latency in the cut.
	SendFor                time.Duration
	QueuePerSec            float64
	AckP50, AckP99, AckMax time.Duration
	// CrossedInCut is what the recipients' boxes held just before the
	// heal: 0, or something crossed the cut.
	CrossedInCut int64
	// DepthMetric is whether DC1 exports mtnode_dc_queue_depth;
	// DepthAtHeal is its sum over DC1's nodes for DC2 just before the
	// heal, in steps.
	DepthMetric bool
	DepthAtHeal float64
	// From the heal until: a recipient's box holds a message
	// (FirstDelivery), DC1's queue to DC2 reads 0 (QueueEmpty, if
	// DepthMetric), the boxes hold Queued messages (InBoxes; Drained).
	// DrainLimit bounds the wait.
	FirstDelivery, QueueEmpty, InBoxes time.Duration
	Drained                            bool
	DrainLimit                         time.Duration
	// Stalled, if not 0, is when the wait gave up: neither the gauge nor
	// the boxes had moved for fedStallAfter.
	Stalled time.Duration
	// ListsOther is, once the drain ended, whether a DC1 client's
	// help.getConfig lists DC2 ([0]) and a DC2 client's lists DC1 ([1]).
	ListsOther [2]bool
	// LastEmpty is the last count that found the boxes empty.
	LastEmpty time.Duration
	// DrainPerSec is Queued / InBoxes; FlowPerSec Queued / (InBoxes -
	// LastEmpty), the rate once messages flow again (a lower bound: the
	// flow began after LastEmpty, at most one count later).
	DrainPerSec, FlowPerSec float64
	// Delivered is what the recipients' boxes held at the end;
	// DuplicateOrExtra what they held beyond Queued + Errors.
	Delivered, DuplicateOrExtra int64
	// Pushed is the live pushes the recipients got, up to
	// chatReceiveGrace after the drain.
	Pushed int64
	// PushDropped is DC2's pushes dropped from the heal until the pushes
	// were counted: mtnode_push_dropped_total (a connection's queue was
	// full) plus mtnode_push_bus_frames_total{dir="dropped"}, over its
	// nodes. Pushes are best effort; the boxes are the truth.
	PushDropped float64
	// CountPolls is how many times the boxes were counted, every
	// CountPollEvery; the gauge was read every DepthPollEvery.
	CountPolls                     int
	CountPollEvery, DepthPollEvery time.Duration
}

// queueDepth sums mtnode_dc_queue_depth{dc="<dc>",...} over a scrape;
// ok is false when the scrape has no such series.
func queueDepth(s samples, dc int) (depth float64, ok bool) {
	label := `dc="` + strconv.Itoa(dc) + `"`
	for k, v := range s {
		if strings.HasPrefix(k, "mtnode_dc_queue_depth{") && strings.Contains(k, label) {
			depth += v
			ok = true
		}
	}
	return depth, ok
}

// boxCounts is, for each user, its dialog's size with its peer u.peer
// (the count of a one-message getHistory page).
func boxCounts(ctx context.Context, users []*chatUser) ([]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, fedCountTimeout)
	defer cancel()
	counts := make([]int64, len(users))
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		sem   = make(chan struct{}, fedCountConcurrency)
	)
	for i, u := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			res, err := u.api.MessagesGetHistory(ctx, &tg.MessagesGetHistoryRequest{Peer: u.peer, Limit: 1})
			if err != nil {
				once.Do(func() { first = fmt.Errorf("%s: getHistory: %w", u.phone, err) })
				return
			}
			switch x := res.(type) {
			case *tg.MessagesMessages:
				counts[i] = int64(len(x.Messages))
			case *tg.MessagesMessagesSlice:
				counts[i] = int64(x.Count)
			default:
				once.Do(func() { first = fmt.Errorf("%s: getHistory answered %T", u.phone, res) })
			}
		})
	}
	wg.Wait()
	return counts, first
}

// boxCount is boxCounts summed: for the backlog's recipients, how many
// messages their boxes hold from their senders.
func boxCount(ctx context.Context, users []*chatUser) (int64, error) {
	counts, err := boxCounts(ctx, users)
	var n int64
	for _, c := range counts {
		n += c
	}
	return n, err
}

// fedBacklog cuts DC1 from DC2, has each pair's DC1 user send to its DC2
// user (n sends in all, within fedBacklogSendFor), heals the link to
// healTo ("" or a delay action) and times the drain: by DC1's
// mtnode_dc_queue_depth for DC2 where the nodes export it, and by the
// recipients' box counts, which decide.
func fedBacklog(ctx context.Context, fed *childFederation, pairs []fedPair, n int, healTo string, log *slog.Logger) (b *FedBacklog, err error) {
	b = &FedBacklog{Senders: len(pairs), Target: n, SendLimit: fedBacklogSendFor,
		CountPollEvery: fedCountEvery, DepthPollEvery: fedDepthEvery}
	recipients := make([]*chatUser, len(pairs))
	for i, p := range pairs {
		recipients[i] = p.b
		p.b.measure.Store(true)
	}
	defer func() {
		for _, p := range pairs {
			p.b.measure.Store(false)
		}
	}()
	if c, err := boxCount(ctx, recipients); err != nil || c != 0 {
		return b, fmt.Errorf("backlog recipients' boxes before the cut: %d messages (%v)", c, err)
	}
	metrics := fed.targets[0].metrics
	log.Info("cutting DC1 from DC2", "senders", len(pairs), "messages", n)
	if err := fed.link(ctx, "drop"); err != nil {
		return b, fmt.Errorf("cut: %w", err)
	}
	healed := false
	defer func() {
		if !healed {
			if herr := fed.link(context.WithoutCancel(ctx), healTo); herr != nil && err == nil {
				err = fmt.Errorf("heal: %w", herr)
			}
		}
	}()

	cut := time.Now()
	sendEnd := cut.Add(fedBacklogSendFor)
	var (
		claimed atomic.Int64
		queued  atomic.Int64
		failed  atomic.Int64
		errOnce sync.Once
		mu      sync.Mutex
		acks    hist
		lastAck atomic.Int64
		wg      sync.WaitGroup
	)
	for _, p := range pairs {
		wg.Go(func() {
			var h hist
			defer func() { mu.Lock(); acks.merge(&h); mu.Unlock() }()
			for claimed.Add(1) <= int64(n) && time.Now().Before(sendEnd) && ctx.Err() == nil {
				t0, err := sendNow(ctx, p.a)
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { b.FirstError = err.Error() })
					continue
				}
				now := time.Now()
				h.record(now.Sub(t0))
				queued.Add(1)
				lastAck.Store(now.UnixNano())
			}
		})
	}
	// Progress, for -v: the node's queue as it grows.
	tick := time.NewTicker(5 * time.Second)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-tick.C:
			d, _ := scrapeDepth(ctx, metrics)
			log.Info("queueing the backlog", "acknowledged", queued.Load(), "errors", failed.Load(), "dc1_queue_depth", d)
		}
	}
	tick.Stop()
	if err := ctx.Err(); err != nil {
		return b, err
	}
	b.Queued, b.Errors = queued.Load(), failed.Load()
	b.SendFor = time.Duration(lastAck.Load() - cut.UnixNano())
	b.QueuePerSec = perSec(float64(b.Queued), b.SendFor)
	b.AckP50, b.AckP99, b.AckMax = acks.quantile(0.5), acks.quantile(0.99), acks.max
	if b.Queued == 0 {
		return b, fmt.Errorf("no send acknowledged during the cut: %s", b.FirstError)
	}
	// Nothing may have crossed the cut.
	crossed, err := boxCount(ctx, recipients)
	if err != nil {
		return b, fmt.Errorf("boxes during the cut: %w", err)
	}
	b.CrossedInCut = crossed
	// The pumps report their queues once a round (an idle one every
	// second): let the gauge catch up with the last sends.
	settle := time.Now().Add(fedDepthSettle)
	for {
		b.DepthAtHeal, b.DepthMetric = scrapeDepth(ctx, metrics)
		if b.DepthAtHeal >= float64(b.Queued) || time.Now().After(settle) || ctx.Err() != nil {
			break
		}
		time.Sleep(fedDepthEvery)
	}

	drops0, _ := fed.targets[1].metrics.scrape(ctx)
	log.Info("healing the cut", "queued", b.Queued, "dc1_queue_depth", b.DepthAtHeal, "crossed", crossed)
	if err := fed.link(ctx, healTo); err != nil {
		return b, fmt.Errorf("heal: %w", err)
	}
	healed = true
	heal := time.Now()
	b.DrainLimit = max(fedDrainMin, time.Duration(b.Queued)*fedDrainPerMsg)
	limit := heal.Add(b.DrainLimit)
	var (
		lastCount, lastLog time.Time
		countErr           error
		depth              = b.DepthAtHeal
		progress           = heal // the last change of the depth or the count
	)
	for time.Now().Before(limit) {
		if err := ctx.Err(); err != nil {
			return b, err
		}
		if b.DepthMetric {
			if d, ok := scrapeDepth(ctx, metrics); ok {
				if d != depth {
					progress = time.Now()
				}
				depth = d
				if d == 0 && b.QueueEmpty == 0 {
					b.QueueEmpty = time.Since(heal)
					lastCount = time.Time{} // count at once
				}
			}
		}
		if time.Since(lastCount) >= fedCountEvery {
			lastCount = time.Now()
			c, err := boxCount(ctx, recipients)
			at := time.Since(heal)
			b.CountPolls++
			if err != nil {
				countErr = err
			} else {
				if c != b.Delivered {
					progress = time.Now()
				}
				b.Delivered = c
				if c > 0 && b.FirstDelivery == 0 {
					b.FirstDelivery = at
				}
				if c == 0 {
					b.LastEmpty = at
				}
				if c >= b.Queued && b.InBoxes == 0 {
					b.InBoxes = at
				}
			}
		}
		if b.InBoxes > 0 && (!b.DepthMetric || b.QueueEmpty > 0) {
			break
		}
		if time.Since(progress) > fedStallAfter {
			b.Stalled = time.Since(heal)
			break
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			log.Info("draining", "since_heal", time.Since(heal).Round(time.Millisecond), "in_boxes", b.Delivered,
				"dc1_queue_depth", depth, "count_error", countErr)
		}
		time.Sleep(fedDepthEvery)
	}
	b.Drained = b.InBoxes > 0
	// Whether each DC lists the other again, in clients' help.getConfig
	// (its table of DCs is the WAN pool's live members).
	for i, x := range []struct {
		u     *chatUser
		other int
	}{{pairs[0].a, 2}, {pairs[0].b, 1}} {
		ok, err := listsDC(ctx, x.u, x.other)
		b.ListsOther[i] = ok
		if err != nil && countErr == nil {
			countErr = err
		}
	}
	if !b.Drained {
		what := fmt.Sprintf("after %s", b.DrainLimit)
		if b.Stalled > 0 {
			what = fmt.Sprintf("%s after the heal, nothing moved for %s", b.Stalled.Round(time.Second), fedStallAfter)
		}
		b.FirstError = fmt.Sprintf("%d of %d messages in the boxes %s (DC1 queue depth %.0f; DC1 lists DC2: %v, DC2 lists DC1: %v; last error: %v)",
			b.Delivered, b.Queued, what, depth, b.ListsOther[0], b.ListsOther[1], countErr)
		return b, nil
	}
	b.DrainPerSec = perSec(float64(b.Queued), b.InBoxes)
	if b.InBoxes > b.LastEmpty {
		b.FlowPerSec = perSec(float64(b.Queued), b.InBoxes-b.LastEmpty)
	}
	// Live pushes still in flight, then a last count for duplicates.
	pushed := func() (n int64) {
		for _, u := range recipients {
			n += u.received.Load()
		}
		return n
	}
	graceEnd := time.Now().Add(chatReceiveGrace)
	for pushed() < b.Queued && time.Now().Before(graceEnd) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	b.Pushed = pushed()
	if drops1, err := fed.targets[1].metrics.scrape(ctx); err == nil && drops0 != nil {
		b.PushDropped = counterDelta(drops0, drops1, mPushDropped) + counterDelta(drops0, drops1, mPushBusDropped)
	}
	if c, err := boxCount(ctx, recipients); err == nil {
		b.Delivered = c
	}
	b.DuplicateOrExtra = max(b.Delivered-b.Queued-b.Errors, 0)
	log.Info("backlog drained", "queued", b.Queued, "in_boxes_after", b.InBoxes, "queue_empty_after", b.QueueEmpty,
		"first_delivery_after", b.FirstDelivery, "pushed", b.Pushed)
	return b, nil
}

// scrapeDepth is DC1's queue depth for DC2, summed over its nodes; ok is
// false if the scrape failed or the nodes export no such series.
func scrapeDepth(ctx context.Context, sc *scraper) (float64, bool) {
	if sc == nil {
		return 0, false
	}
	s, err := sc.scrape(ctx)
	if err != nil {
		return 0, false
	}
	return queueDepth(s, 2)
}
