package loadgen

import (
	"fmt"
	"slices"
	"strings"
)

// chatMarkdown writes the chat scenario's tables.
func (r *Report) chatMarkdown(p *mdWriter) {
	p.f("### Private messages: users in pairs, each a gotd telegram.Client running a closed loop of `messages.sendMessage` to its peer\n\n")
	p.f("| nodes | users | msgs/s | ack p50 | ack p99 | send→receive p50 | p99 | max | sent | received | missing | errors | redials | cores busy: node, client | node CPU/msg (net) | msgs per node CPU-second |\n")
	p.f("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range r.Chat {
		p.f("| %d | %d | %.0f | %s | %s | %s | %s | %s | %d | %d | %d | %d | %.0f | %s, %s | %s | %.0f |\n",
			max(c.Nodes, 1), c.Users, c.PerSec, ms(c.AckP50), ms(c.AckP99), ms(c.E2EP50), ms(c.E2EP99), ms(c.E2EMax),
			c.Sent, c.Received, c.Missing, c.Errors, c.Redials,
			cores(c.ServerCPU, c.Elapsed), cores(c.ClientCPU, c.Elapsed),
			us(c.ServerCPUPerMsg), perSec(1, c.ServerCPUPerMsg))
	}
	r.chatNodesMarkdown(p)
	p.f("\nSetup (one auth key per user, created with a fast pq factoring; connect; sign up with test numbers; import the peer):\n\n")
	p.f("| nodes | users | keys | connect | sign-up | import |\n|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range r.Chat {
		p.f("| %d | %d | %.1fs | %.1fs | %.1fs | %.1fs |\n", max(c.Nodes, 1), c.Users, c.KeysSetup.Seconds(), c.Connect.Seconds(), c.SignIn.Seconds(), c.Import.Seconds())
	}
	p.f("\nStorage floor: a fresh Badger in a temp dir with SyncWrites, each commit one transaction shaped like one sendMessage's")
	if len(r.Chat) > 0 && r.Chat[0].Floor1 != nil {
		p.f(" (%d entries, %d B of keys and values)", r.Chat[0].Floor1.Entries, r.Chat[0].Floor1.Bytes)
	}
	p.f(":\n\n| nodes | users | writers | commits/s | commit p50 | commit p99 | msgs/s ÷ commits/s |\n|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range r.Chat {
		for _, fl := range []struct {
			f *BadgerFloor
			r float64
		}{{c.Floor1, c.Ratio1}, {c.FloorN, c.RatioN}} {
			if fl.f == nil {
				continue
			}
			p.f("| %d | %d | %d | %.0f | %s | %s | %s |\n", max(c.Nodes, 1), c.Users, fl.f.Writers, fl.f.PerSec, ms(fl.f.P50), ms(fl.f.P99), ratio(fl.r))
		}
	}
	for _, c := range r.Chat {
		if c.FirstError != "" {
			p.f("\n%d nodes, %d users, first error: `%s`", max(c.Nodes, 1), c.Users, c.FirstError)
		}
	}
	p.f("\nOne sendMessage writes what one floor transaction writes (author's and recipient's copies together); the node groups concurrent commands into shared transactions, so the N-writer floor, which shares fsyncs the same way, is the comparable ceiling. Missing = acknowledged messages whose push the peer did not get within %s (no getDifference).\n\n", chatReceiveGrace)
}

// chatNodesMarkdown sets the DC sizes side by side: for each user count
// run on more than one size, each size's rate and latencies next to the
// first size's (Options.Nodes order).
func (r *Report) chatNodesMarkdown(p *mdWriter) {
	var sizes, users []int
	for _, c := range r.Chat {
		if !slices.Contains(sizes, max(c.Nodes, 1)) {
			sizes = append(sizes, max(c.Nodes, 1))
		}
		if !slices.Contains(users, c.Users) {
			users = append(users, c.Users)
		}
	}
	if len(sizes) < 2 {
		return
	}
	find := func(nodes, u int) *ChatReport {
		for i := range r.Chat {
			if max(r.Chat[i].Nodes, 1) == nodes && r.Chat[i].Users == u {
				return &r.Chat[i]
			}
		}
		return nil
	}
	base := sizes[0]
	names := make([]string, len(sizes))
	for i, n := range sizes {
		names[i] = fmt.Sprint(n)
	}
	p.f("\nDC sizes side by side (%s nodes; each a freshly formed DC, same users and duration, one run; users round-robin over the nodes, so with more than one node a sender's peer sits on another node), ratios to %d node(s):\n\n", strings.Join(names, " vs "), base)
	p.f("| users | nodes | msgs/s | ÷ %d-node | send→receive p50 | ÷ %d-node | p99 | ÷ %d-node | ack p50 | ack p99 |\n", base, base, base)
	p.f("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	div := func(a, b float64) string {
		if b <= 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	for _, u := range users {
		b := find(base, u)
		for _, n := range sizes {
			c := find(n, u)
			if c == nil {
				continue
			}
			bRate, bP50, bP99 := 0.0, 0.0, 0.0
			if b != nil {
				bRate, bP50, bP99 = b.PerSec, float64(b.E2EP50), float64(b.E2EP99)
			}
			p.f("| %d | %d | %.0f | %s | %s | %s | %s | %s | %s | %s |\n", u, n,
				c.PerSec, div(c.PerSec, bRate), ms(c.E2EP50), div(float64(c.E2EP50), bP50),
				ms(c.E2EP99), div(float64(c.E2EP99), bP99), ms(c.AckP50), ms(c.AckP99))
		}
	}
}

// failoverMarkdown writes the failover scenario.
func (r *Report) failoverMarkdown(p *mdWriter) {
	f := r.Failover
	p.f("### Failover: kill -9 of the node leading the most raft groups of a %d-node child DC under a steady chat load\n\n", f.Nodes)
	p.f("%d users in pairs, round-robin over the nodes, each sending at most one message per %s (send timeout %s); DC formed in %.1fs, users set up in %.1fs; %d sent, %d failed sends in all.\n\n",
		f.Users, f.SendInterval, f.SendTimeout, f.Form.Seconds(), f.Setup.Seconds(), f.Sent, f.Errors)
	p.f("| round | killed | exit | groups moved | new leader (most groups) | new leaders after | writes resumed after | restart until serving | restart until caught up |\n|---:|---|---|---:|---|---:|---:|---:|---:|\n")
	writers := 0
	for i, x := range f.Rounds {
		p.f("| %d | %s | %s | %d | %s | %s | %s | %s | %s |\n", i+1, x.Killed, x.KilledBy, x.Groups, x.NewLeader, ms(x.Leader), ms(x.Resume), ms(x.Restart), ms(x.CatchUp))
		writers = max(writers, x.Writers)
	}
	p.f("\n| over %d rounds | min | median | max |\n|---|---:|---:|---:|\n", len(f.Rounds))
	for _, s := range []struct {
		name string
		s    Spread
	}{
		{"every group the killed node led has a Leader on another node (/cluster/status)", f.Leader},
		{fmt.Sprintf("every user on a surviving node (%d of %d) has an acknowledgement of a send begun after the kill", writers, f.Users), f.Resume},
		{"killed node restarted until \"mtnode serving\"", f.Restart},
		{"killed node restarted until, per group it votes in, it sees a leader and has applied what the leader had", f.CatchUp},
	} {
		p.f("| %s | %s | %s | %s |\n", s.name, ms(s.s.Min), ms(s.s.Median), ms(s.s.Max))
	}
	if f.FirstError != "" {
		p.f("\nFirst send error: `%s`\n", f.FirstError)
	}
	p.f("\nThe DC has %d raft groups (metadata, the directory and the users' boxes); each round kills the node that leads the most of them (by the `leads` of each node's /cluster/status; ties: the lowest node), and \"groups moved\" is how many groups it led by its own status just before the kill. Times run from just before SIGKILL. \"New leaders after\" is until, in one poll of the surviving nodes (every 10 ms), each of those groups has another node reporting itself Leader; \"new leader\" is the node that took over the most of them. \"Writes resumed after\" is until every user whose client talks to a surviving node has had a send acknowledged that began after the killed process was reaped (so the dead node cannot have committed it): the latest of those users' first such acknowledgements; the killed node's own users cannot send until it is back. \"Caught up\" is until the restarted node, in every group it is a voter of, sees a leader and has applied at least what that group's leader had applied once the node served (the leader's applied index, not its commit index, which raft's own entries can keep out of reach). The next round starts only then, and once %d more sends were acknowledged.\n\n", f.Groups, failoverSettle)
}
