package loadgen

import (
	"context"
	"fmt"
	"time"

	"github.com/gotd/td/telegram"
)

// PingMethod is how a client does one round trip.
type PingMethod string

// The round trips a client can measure.
const (
	// PingAuto uses PingMTProto if the node answers it and PingRPC if not.
	PingAuto PingMethod = "auto"
	// PingMTProto is the mtproto ping#7abe77ec, sent by
	// telegram.Client.Ping as a service message and answered by pong.
	PingMTProto PingMethod = "ping"
	// PingRPC is help.getNearestDc, the cheapest API call the node serves:
	// an encrypted request, handler dispatch and an rpc_result.
	PingRPC PingMethod = "rpc"
)

// pinger does one round trip on a client.
type pinger func(ctx context.Context, c *telegram.Client) error

func pingMTProto(ctx context.Context, c *telegram.Client) error { return c.Ping(ctx) }

func pingRPC(ctx context.Context, c *telegram.Client) error {
	_, err := c.API().HelpGetNearestDC(ctx)
	return err
}

// probeTimeout bounds the one ping that decides PingAuto.
const probeTimeout = 5 * time.Second

// resolvePinger picks the round trip for m, probing c for PingAuto. note
// says why PingAuto fell back, if it did.
func resolvePinger(ctx context.Context, m PingMethod, c *telegram.Client) (p pinger, used PingMethod, note string, err error) {
	switch m {
	case PingRPC:
		return pingRPC, PingRPC, "", nil
	case PingMTProto, PingAuto, "":
	default:
		return nil, "", "", fmt.Errorf("unknown ping method %q", m)
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	perr := c.Ping(pctx)
	if perr == nil {
		return pingMTProto, PingMTProto, "", nil
	}
	if ctx.Err() != nil {
		return nil, "", "", ctx.Err()
	}
	if m == PingMTProto {
		return nil, "", "", fmt.Errorf("node did not answer telegram.Client.Ping within %s: %w", probeTimeout, perr)
	}
	if err := pingRPC(ctx, c); err != nil {
		return nil, "", "", fmt.Errorf("neither ping (%v) nor help.getNearestDc (%w) answered", perr, err)
	}
	return pingRPC, PingRPC, fmt.Sprintf("telegram.Client.Ping got no pong within %s (%v), so help.getNearestDc was measured instead", probeTimeout, perr), nil
}
