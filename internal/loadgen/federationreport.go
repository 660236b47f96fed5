package loadgen

import (
	"fmt"
	"strings"
	"time"
)

// delayName names a pass by its added WAN delay.
func delayName(d time.Duration) string {
	if d <= 0 {
		return "none"
	}
	return d.String() + " each way"
}

// federationMarkdown writes the federation scenario's tables: the loops
// row by row, same-DC and cross-DC side by side, and the backlog with one
// column per pass.
func (r *Report) federationMarkdown(p *mdWriter) {
	f := r.Federation
	p.f("### Federation: DC1 and DC2 of %d child node(s) each, federated over the WAN pool on loopback\n\n", f.NodesPerDC)
	for _, x := range f.Passes {
		p.f("Pass with WAN delay %s: DCs serving in %.1fs, then users set up (keys, connections, both DCs listing each other, sign-up, import) in %.1fs.\n", delayName(x.WANDelay), x.Form.Seconds(), x.Setup.Seconds())
	}
	p.f("\n| WAN delay | pairs | users | msgs/s | ack p50 | ack p99 | send→receive p50 | p99 | max | sent | received | missing pushes | pushes dropped | not in box | extra in box | errors |\n")
	p.f("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range f.Passes {
		for _, c := range x.Rows {
			what := "same DC"
			if c.Cross {
				what = "**DC1–DC2**"
			}
			p.f("| %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %d | %d | %d | %.0f | %d | %d | %d |\n",
				delayName(x.WANDelay), what, c.Users, c.PerSec, ms(c.AckP50), ms(c.AckP99),
				ms(c.E2EP50), ms(c.E2EP99), ms(c.E2EMax), c.Sent, c.Received, c.Missing, c.PushDropped,
				c.BoxShort, c.BoxExtra, c.Errors)
		}
	}
	for _, x := range f.Passes {
		for _, c := range x.Rows {
			if c.FirstError != "" {
				p.f("\nWAN delay %s, %d users, cross-DC %v, first error: `%s`\n", delayName(x.WANDelay), c.Users, c.Cross, c.FirstError)
			}
		}
	}
	p.f("\nCross-DC over same-DC, per pass and level:\n\n")
	p.f("| WAN delay | users | send→receive p50: same, cross | ÷ | p99: same, cross | ÷ | msgs/s: same, cross | ÷ |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	div := func(a, b float64) string {
		if b <= 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	for _, x := range f.Passes {
		for i := 0; i+1 < len(x.Rows); i += 2 {
			s, c := x.Rows[i], x.Rows[i+1]
			p.f("| %s | %d | %s, %s | %s | %s, %s | %s | %.0f, %.0f | %s |\n", delayName(x.WANDelay), s.Users,
				ms(s.E2EP50), ms(c.E2EP50), div(float64(c.E2EP50), float64(s.E2EP50)),
				ms(s.E2EP99), ms(c.E2EP99), div(float64(c.E2EP99), float64(s.E2EP99)),
				s.PerSec, c.PerSec, div(c.PerSec, s.PerSec))
		}
	}
	r.backlogMarkdown(p)
	p.f("\nEach pass forms two fresh DCs from one `mtnode keygen` secrets dir (DC2 told `--join-wan` DC1's first node, node ids unique across DCs, `cluster.fault_injection` on). The WAN delay is `POST /debug/faults` `delay=D` on every node for every mesh address of the other DC, so each datagram between the DCs waits D on its way out (a round trip gains 2D). ")
	p.f("Users sit on a node of their home DC (round-robin over its nodes) with their own key and test number. A pair sends both ways, closed loop: each user sends its next message once the last was acknowledged; same-DC pairs are two users of one DC (alternately DC1 and DC2, so both DCs carry load, as with the cross-DC pairs), DC1–DC2 pairs a DC1 and a DC2 user, so every message of theirs is committed in the sender's DC and carried to the other by the outbox pump. send→receive is from just before the send to the recipient's update handler (the send time is the text; one clock), as in the chat scenario; missing = acknowledged messages not pushed within %s.\n\n", chatReceiveGrace)
	p.f("Backlog: every node of both DCs drops every mesh datagram from and to the other DC; each sender (a DC1 user) sends to its own DC2 recipient, closed loop, until the backlog is queued (at most %s), so every send is acknowledged by DC1 alone. Then the cut heals (back to the pass's delay) and the drain is timed: \"in the boxes\" is the sum over recipients of their dialog's size with their sender (`messages.getHistory` limit 1, its count), polled every %s; \"DC1 queue empty\" is `mtnode_dc_queue_depth{dc=\"2\"}` summed over DC1's nodes reading 0, polled every %s (steps not yet acknowledged by DC2; the pump acknowledges at most every 100 ms). The recipients stay online, so DC2 also pushes every message to them.\n\n",
		fedBacklogSendFor, fedCountEvery, fedDepthEvery)
}

// backlogMarkdown writes the backlog table, one column per pass.
func (r *Report) backlogMarkdown(p *mdWriter) {
	f := r.Federation
	var bs []*FedBacklog
	var heads []string
	for _, x := range f.Passes {
		if x.Backlog != nil {
			bs = append(bs, x.Backlog)
			heads = append(heads, "WAN delay "+delayName(x.WANDelay))
		}
	}
	if len(bs) == 0 {
		return
	}
	p.f("\nBacklog of %d messages queued in DC1 for DC2 during a cut, then drained:\n\n", f.Backlog)
	p.f("| | %s |\n|---|%s\n", strings.Join(heads, " | "), strings.Repeat("---:|", len(bs)))
	row := func(name string, cell func(b *FedBacklog) string) {
		cells := make([]string, len(bs))
		for i, b := range bs {
			cells[i] = cell(b)
		}
		p.f("| %s | %s |\n", name, strings.Join(cells, " | "))
	}
	secs := func(d time.Duration) string {
		if d <= 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	row("senders (DC1) → recipients (DC2)", func(b *FedBacklog) string { return fmt.Sprintf("%d → %d", b.Senders, b.Senders) })
	row("acknowledged during the cut (queued)", func(b *FedBacklog) string { return fmt.Sprintf("%d of %d", b.Queued, b.Target) })
	row("failed sends during the cut", func(b *FedBacklog) string { return fmt.Sprint(b.Errors) })
	row("queueing took", func(b *FedBacklog) string { return secs(b.SendFor) })
	row("queued msgs/s", func(b *FedBacklog) string { return fmt.Sprintf("%.0f", b.QueuePerSec) })
	row("ack p50, p99, max during the cut", func(b *FedBacklog) string {
		return fmt.Sprintf("%s, %s, %s", ms(b.AckP50), ms(b.AckP99), ms(b.AckMax))
	})
	row("in DC2's boxes before the heal", func(b *FedBacklog) string { return fmt.Sprint(b.CrossedInCut) })
	row("DC1 queue depth to DC2 at the heal (steps)", func(b *FedBacklog) string {
		if !b.DepthMetric {
			return "not exported"
		}
		return fmt.Sprintf("%.0f", b.DepthAtHeal)
	})
	row("heal → first message in a box", func(b *FedBacklog) string { return secs(b.FirstDelivery) })
	row("heal → DC1 queue empty (metric)", func(b *FedBacklog) string {
		if !b.DepthMetric {
			return "not exported"
		}
		return secs(b.QueueEmpty)
	})
	row("**heal → every queued message in the boxes**", func(b *FedBacklog) string {
		switch {
		case b.Drained:
			return "**" + secs(b.InBoxes) + "**"
		case b.Stalled > 0:
			return fmt.Sprintf("**never: stalled** (nothing moved for %s; gave up %s after the heal)", fedStallAfter, secs(b.Stalled))
		}
		return fmt.Sprintf("**not within %s**", b.DrainLimit)
	})
	row("**drained msgs/s** (queued ÷ heal → all in boxes)", func(b *FedBacklog) string {
		if !b.Drained {
			return "–"
		}
		return fmt.Sprintf("**%.0f**", b.DrainPerSec)
	})
	row("msgs/s once flowing, at least (queued ÷ last count of none → all in boxes)", func(b *FedBacklog) string {
		if b.FlowPerSec <= 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f", b.FlowPerSec)
	})
	row("in the boxes at the end; above queued + failed", func(b *FedBacklog) string {
		return fmt.Sprintf("%d; %d", b.Delivered, b.DuplicateOrExtra)
	})
	row(fmt.Sprintf("pushed live to the recipients (within %s of the drain)", chatReceiveGrace), func(b *FedBacklog) string { return fmt.Sprint(b.Pushed) })
	row("pushes DC2 dropped (queue full)", func(b *FedBacklog) string { return fmt.Sprintf("%.0f", b.PushDropped) })
	row("box counts polled", func(b *FedBacklog) string { return fmt.Sprint(b.CountPolls) })
	row("then: DC1 lists DC2, DC2 lists DC1 (help.getConfig)", func(b *FedBacklog) string {
		yes := func(v bool) string {
			if v {
				return "yes"
			}
			return "**no**"
		}
		return yes(b.ListsOther[0]) + ", " + yes(b.ListsOther[1])
	})
	for i, b := range bs {
		if b.FirstError != "" {
			p.f("\n%s, first error: `%s`\n", heads[i], b.FirstError)
		}
	}
}
