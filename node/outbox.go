package node

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/replication"
)

// The outbox pump (DESIGN.md, "The outbox pump"): the leader of each group
// carries its outbox to the destination groups. One goroutine per group;
// a round reads, per destination, the oldest entries not carried yet,
// proposes each destination's batch as one messaging.Inbox there
// (concurrently across destinations), and remembers what each
// destination applied. What was carried is deleted by an OutboxAck here
// at most every pumpAckEvery, one entry for every destination, so under
// load the ack costs a small fraction of a commit per message. A batch
// sent again (by a new leader, which starts from the last ack) is skipped
// by the destination, which keeps the last seq it applied per source.

const (
	// pumpRetry is the wait after a failed round.
	pumpRetry = 100 * time.Millisecond
	// pumpIdle is the period at which an idle leader looks anyway: its
	// outbox may hold entries a previous leader committed but did not
	// carry, and acks may be due.
	pumpIdle = time.Second
	// pumpAckEvery spaces a group's acks.
	pumpAckEvery = 100 * time.Millisecond
)

func (c *clusterNode) wakePump(g int) {
	select {
	case c.pumpWake[g] <- struct{}{}:
	default:
	}
}

// pump is one group's pump state. Its goroutine owns it; mu guards
// carried, which wait reads.
type pump struct {
	c *clusterNode
	g int
	// carried[dest] is the last seq dest applied, as this node saw it; the
	// outbox still holds entries up to it until acked.
	mu      sync.Mutex
	carried map[int]int64
	// inFlight holds the other DCs a batch is on its way to: each is
	// carried by its own goroutine, so a slow or unreachable DC never
	// holds up this DC's own deliveries.
	inFlight map[int]bool
	acked    map[int]int64
	lastAck  time.Time
}

func newPump(c *clusterNode, g int) *pump {
	return &pump{c: c, g: g, carried: map[int]int64{}, inFlight: map[int]bool{}, acked: map[int]int64{}}
}

// wait returns once every mark was carried to its destination, or ctx
// ends (the steps stay in the outbox and are carried later).
func (p *pump) wait(ctx context.Context, marks []messaging.OutboxMark) {
	p.c.wakePump(p.g)
	for {
		p.mu.Lock()
		done := true
		for _, m := range marks {
			if p.carried[m.Dest] < m.Upto {
				done = false
			}
		}
		p.mu.Unlock()
		if done || !sleepCtx(ctx, 2*time.Millisecond) {
			return
		}
	}
}

func (c *clusterNode) runPump(ctx context.Context, g int) {
	p := c.pumps[g]
	t := time.NewTicker(pumpIdle)
	defer t.Stop()
	for {
		busy, ok := p.round(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case busy && ok:
			continue
		case !ok:
			if !sleepCtx(ctx, pumpRetry) {
				return
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-c.pumpWake[g]:
		case <-t.C:
		}
	}
}

// round carries one batch per destination and acks if due. busy: there
// was something to carry; ok: every batch got through.
func (p *pump) round(ctx context.Context) (busy, ok bool) {
	c, g := p.c, p.g
	grp := c.groups[g]
	if !grp.IsLeader() {
		c.metrics.outboxPending.WithLabelValues(groupLabel(g)).Set(0)
		c.metrics.clearDCQueues(g)
		p.mu.Lock()
		clear(p.carried) // a later leadership starts from the outbox
		p.mu.Unlock()
		clear(p.acked)
		return false, true
	}
	snap := grp.Snapshot()
	p.mu.Lock()
	after := maps.Clone(p.carried)
	p.mu.Unlock()
	pending, err := messaging.PendingOutbox(&snap.Txn, len(c.groups), after)
	c.reportDCQueues(g, &snap.Txn)
	snap.Discard()
	if err != nil {
		c.log.Error("read outbox", "group", g, "err", err)
		return false, false
	}
	n := 0
	for _, es := range pending {
		n += len(es)
	}
	c.metrics.outboxPending.WithLabelValues(groupLabel(g)).Set(float64(n))
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Cluster.HoldTimeout.Duration)
	defer cancel()
	ok = true
	local := 0
	if len(pending) > 0 {
		var wg sync.WaitGroup
		var mu sync.Mutex // guards ok
		for dest, entries := range pending {
			if dest < 0 {
				p.carryRemote(dest, entries)
				continue
			}
			local++
			wg.Add(1)
			go func() {
				defer wg.Done()
				in := messaging.Inbox{Group: dest, Src: g}
				for _, e := range entries {
					in.Seqs, in.Steps = append(in.Seqs, e.Seq), append(in.Steps, e.Step)
				}
				if _, err := c.proposeTo(ctx, dest, in); err != nil {
					c.log.Debug("outbox batch not carried", "group", g, "dest", dest, "steps", len(entries), "err", err)
					c.metrics.outboxSteps.WithLabelValues("retried").Add(float64(len(entries)))
					mu.Lock()
					ok = false
					mu.Unlock()
					return
				}
				c.metrics.outboxSteps.WithLabelValues("carried").Add(float64(len(entries)))
				p.mu.Lock()
				p.carried[dest] = in.Seqs[len(in.Seqs)-1]
				p.mu.Unlock()
			}()
		}
		wg.Wait()
	}
	if err := p.ack(ctx, local == 0); err != nil {
		c.log.Debug("outbox ack failed", "group", g, "err", err)
		ok = false
	}
	return local > 0, ok
}

// remoteRetry is the pause after a batch another DC did not take.
const remoteRetry = time.Second

// carryRemote starts carrying a batch to another DC (dest < 0) unless
// one is on its way there already. Success wakes the pump, which then
// sends the next batch and, in time, acknowledges this one.
func (p *pump) carryRemote(dest int, entries []messaging.OutboxEntry) {
	c := p.c
	p.mu.Lock()
	if p.inFlight[dest] {
		p.mu.Unlock()
		return
	}
	p.inFlight[dest] = true
	p.mu.Unlock()
	c.spawn(func() {
		err := c.fed.carry(c.ctx, messaging.RemoteDC(dest), p.g, entries)
		if err != nil {
			c.log.Debug("batch to another DC not carried", "group", p.g, "dc", messaging.RemoteDC(dest), "steps", len(entries), "err", err)
			c.metrics.outboxSteps.WithLabelValues("retried").Add(float64(len(entries)))
			sleepCtx(c.ctx, remoteRetry)
		} else {
			c.metrics.outboxSteps.WithLabelValues("carried").Add(float64(len(entries)))
		}
		p.mu.Lock()
		if err == nil {
			p.carried[dest] = max(p.carried[dest], entries[len(entries)-1].Seq)
		}
		delete(p.inFlight, dest)
		p.mu.Unlock()
		c.wakePump(p.g)
	})
}

// ack deletes what was carried, if pumpAckEvery has passed or the pump is
// idle (then at once: nothing else is coming to share the commit).
func (p *pump) ack(ctx context.Context, idle bool) error {
	var marks []messaging.OutboxMark
	p.mu.Lock()
	for _, dest := range slices.Sorted(maps.Keys(p.carried)) {
		if p.carried[dest] > p.acked[dest] {
			marks = append(marks, messaging.OutboxMark{Dest: dest, Upto: p.carried[dest]})
		}
	}
	p.mu.Unlock()
	if len(marks) == 0 || (!idle && time.Since(p.lastAck) < pumpAckEvery) {
		return nil
	}
	p.lastAck = time.Now()
	if _, err := p.c.applyOn(ctx, replication.ShardID(p.g), messaging.OutboxAck{Group: p.g, Marks: marks}, messaging.Env{}); err != nil {
		return err
	}
	for _, m := range marks {
		p.acked[m.Dest] = m.Upto
	}
	return nil
}
