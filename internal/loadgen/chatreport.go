package loadgen

// chatMarkdown writes the chat scenario's tables.
func (r *Report) chatMarkdown(p *mdWriter) {
	p.f("### Private messages: users in pairs, each a gotd telegram.Client running a closed loop of `messages.sendMessage` to its peer\n\n")
	p.f("| users | msgs/s | ack p50 | ack p99 | send→receive p50 | p99 | max | sent | received | missing | errors | redials | cores busy: node, client | node CPU/msg (net) | msgs per node CPU-second |\n")
	p.f("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range r.Chat {
		p.f("| %d | %.0f | %s | %s | %s | %s | %s | %d | %d | %d | %d | %.0f | %s, %s | %s | %.0f |\n",
			c.Users, c.PerSec, ms(c.AckP50), ms(c.AckP99), ms(c.E2EP50), ms(c.E2EP99), ms(c.E2EMax),
			c.Sent, c.Received, c.Missing, c.Errors, c.Redials,
			cores(c.ServerCPU, c.Elapsed), cores(c.ClientCPU, c.Elapsed),
			us(c.ServerCPUPerMsg), perSec(1, c.ServerCPUPerMsg))
	}
	p.f("\nSetup (one auth key per user, created with a fast pq factoring; connect; sign up with test numbers; import the peer):\n\n")
	p.f("| users | keys | connect | sign-up | import |\n|---:|---:|---:|---:|---:|\n")
	for _, c := range r.Chat {
		p.f("| %d | %.1fs | %.1fs | %.1fs | %.1fs |\n", c.Users, c.KeysSetup.Seconds(), c.Connect.Seconds(), c.SignIn.Seconds(), c.Import.Seconds())
	}
	p.f("\nStorage floor: a fresh Badger in a temp dir with SyncWrites, each commit one transaction shaped like one sendMessage's")
	if len(r.Chat) > 0 && r.Chat[0].Floor1 != nil {
		p.f(" (%d entries, %d B of keys and values)", r.Chat[0].Floor1.Entries, r.Chat[0].Floor1.Bytes)
	}
	p.f(":\n\n| users | writers | commits/s | commit p50 | commit p99 | msgs/s ÷ commits/s |\n|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range r.Chat {
		for _, fl := range []struct {
			f *BadgerFloor
			r float64
		}{{c.Floor1, c.Ratio1}, {c.FloorN, c.RatioN}} {
			if fl.f == nil {
				continue
			}
			p.f("| %d | %d | %.0f | %s | %s | %s |\n", c.Users, fl.f.Writers, fl.f.PerSec, ms(fl.f.P50), ms(fl.f.P99), ratio(fl.r))
		}
	}
	for _, c := range r.Chat {
		if c.FirstError != "" {
			p.f("\n%d users, first error: `%s`", c.Users, c.FirstError)
		}
	}
	p.f("\nOne sendMessage writes what one floor transaction writes (author's and recipient's copies together); the node groups concurrent commands into shared transactions, so the N-writer floor, which shares fsyncs the same way, is the comparable ceiling. Missing = acknowledged messages whose push the peer did not get within %s (no getDifference).\n\n", chatReceiveGrace)
}
