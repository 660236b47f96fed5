package node

import (
	"context"
	"sync"
	"time"

	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/replication"
)

// The outbox pump (DESIGN.md, "Sharded messaging"): the leader of each
// group carries its outbox to the destination groups. One goroutine per
// group; a round reads the oldest pending entries per destination,
// proposes each destination's batch as one messaging.Inbox (concurrently
// across destinations), and after each success proposes an OutboxAck
// here. The destination skips seqs it has applied, so a batch sent again
// by a new leader (the old one died before its ack) applies once.

// pumpRetry is the wait after a failed round; pumpIdle the period at
// which an idle leader looks anyway (its outbox may hold entries a
// previous leader committed but did not carry).
const (
	pumpRetry = 100 * time.Millisecond
	pumpIdle  = time.Second
)

func (c *clusterNode) wakePump(g int) {
	select {
	case c.pumpWake[g] <- struct{}{}:
	default:
	}
}

func (c *clusterNode) runPump(ctx context.Context, g int) {
	t := time.NewTicker(pumpIdle)
	defer t.Stop()
	for {
		busy, ok := c.pumpRound(ctx, g)
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

// pumpRound carries one batch per destination. busy: there was something
// to carry; ok: every batch got through.
func (c *clusterNode) pumpRound(ctx context.Context, g int) (busy, ok bool) {
	grp := c.groups[g]
	if !grp.IsLeader() {
		c.metrics.outboxPending.WithLabelValues(groupLabel(g)).Set(0)
		return false, true
	}
	snap := grp.Snapshot()
	pending, err := messaging.PendingOutbox(&snap.Txn)
	depth, derr := messaging.OutboxDepth(&snap.Txn)
	snap.Discard()
	if err != nil || derr != nil {
		c.log.Error("read outbox", "group", g, "err", err, "depth_err", derr)
		return false, false
	}
	total := 0
	for _, n := range depth {
		total += n
	}
	c.metrics.outboxPending.WithLabelValues(groupLabel(g)).Set(float64(total))
	if len(pending) == 0 {
		return false, true
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Cluster.HoldTimeout.Duration)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok = true
	for dest, entries := range pending {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := messaging.Inbox{Group: dest, Src: g}
			for _, e := range entries {
				in.Seqs, in.Steps = append(in.Seqs, e.Seq), append(in.Steps, e.Step)
			}
			upto := in.Seqs[len(in.Seqs)-1]
			_, err := c.proposeTo(ctx, dest, in)
			if err == nil {
				_, err = c.applyOn(ctx, replication.ShardID(g), messaging.OutboxAck{Group: g, Dest: dest, Upto: upto}, messaging.Env{})
			}
			if err != nil {
				c.log.Debug("outbox batch not carried", "group", g, "dest", dest, "steps", len(entries), "err", err)
				c.metrics.outboxSteps.WithLabelValues("retried").Add(float64(len(entries)))
				mu.Lock()
				ok = false
				mu.Unlock()
				return
			}
			c.metrics.outboxSteps.WithLabelValues("carried").Add(float64(len(entries)))
		}()
	}
	wg.Wait()
	return true, ok
}
