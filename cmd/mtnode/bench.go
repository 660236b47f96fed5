package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mtnode/mtnode/internal/loadgen"
	"github.com/mtnode/mtnode/internal/mtclient"
)

// runBench is `mtnode bench`: the load generator. By default it starts this
// same binary as a child node; --addr and --pubkey target another one.
func runBench(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mtnode bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		opts       loadgen.Options
		scenarios  = fs.String("scenario", "all", "comma-separated scenarios: crypto, handshake, ping, chat, idle, or all (those five); failover, federation and mtproxy run only when named")
		nodes      = fs.String("nodes", "1", "comma-separated DC sizes of child nodes (e.g. 1,3): chat runs on a fresh DC of each size, users round-robin over its nodes; the other scenarios use the first size")
		conns      = fs.String("conns", "1,64,1024", "comma-separated concurrent connections for the ping scenario")
		chatUsers  = fs.String("chat-users", "2,100,1000", "comma-separated user counts (even) for the chat scenario")
		fedUsers   = fs.String("fed-users", "2,50", "comma-separated user counts (even) for the federation scenario's same-DC and cross-DC loops")
		wanDelay   = fs.Duration("wan-delay", 50*time.Millisecond, "federation scenario: delay added between the DCs, each way, in a second pass; 0 skips that pass")
		transport  = fs.String("transport", string(mtclient.Intermediate), "client transport for ping and idle")
		ping       = fs.String("ping", string(loadgen.PingAuto), "round trip: ping (telegram.Client.Ping), rpc (help.getNearestDc) or auto (ping if answered)")
		mtpStreams = fs.String("mtproxy-streams", "1,100", "mtproxy scenario: comma-separated concurrent streams of the throughput levels")
		asJSON     = fs.Bool("json", false, "print the report as JSON instead of Markdown")
		verbose    = fs.Bool("v", false, "log progress to stderr")
	)
	fs.DurationVar(&opts.Duration, "duration", 10*time.Second, "length of each measured phase")
	fs.IntVar(&opts.Failovers, "failovers", 5, "kills of the failover scenario (of the node leading the most groups of a 3-node child DC)")
	fs.IntVar(&opts.Federation.NodesPerDC, "fed-nodes", 1, "federation scenario: nodes per DC (1 to 5)")
	fs.IntVar(&opts.Federation.Backlog, "backlog", 100_000, "federation scenario: messages DC1 queues for DC2 while they are cut apart")
	fs.IntVar(&opts.IdleConns, "idle-conns", 1000, "idle connections to open for the idle and mtproxy scenarios")
	fs.StringVar(&opts.MTProxy.MTG, "mtg", "", "mtproxy scenario: the mtg binary to compare `mtnode proxy` with; empty measures mtnode alone")
	fs.BoolVar(&opts.MTProxy.QUIC, "mtproxy-quic", false, "mtproxy scenario: also measure `mtnode proxy` with the mesh's TCP lane off (relaying over QUIC)")
	fs.IntVar(&opts.HandshakeWorkers, "handshake-workers", 0, "concurrent key exchanges; 0 is twice GOMAXPROCS (keep below the node's max_handshakes)")
	fs.StringVar((*string)(&opts.HandshakeClient), "handshake-client", "fast", "key exchange client of the handshake scenario: fast (loads the node) or gotd (the real library)")
	fs.IntVar(&opts.SetupConcurrency, "setup-concurrency", 16, "connections set up at once")
	fs.IntVar(&opts.ServerProcs, "server-procs", 0, "GOMAXPROCS of the child node; 0 leaves the default")
	fs.StringVar(&opts.Addr, "addr", "", "MTProto address of a running node; empty starts a child node")
	fs.StringVar(&opts.PublicKeyFile, "pubkey", "", "server.pub of the node at --addr")
	fs.StringVar(&opts.MetricsAddr, "metrics-addr", "", "HTTP address of the node at --addr, for its /metrics")
	fs.IntVar(&opts.DC, "dc", 1, "DC id of the node at --addr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mtnode bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *scenarios != "all" {
		for _, s := range strings.Split(*scenarios, ",") {
			opts.Scenarios = append(opts.Scenarios, loadgen.Scenario(strings.TrimSpace(s)))
		}
	}
	opts.Conns = nil
	for _, s := range strings.Split(*conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fmt.Fprintf(stderr, "mtnode bench: bad --conns %q\n", *conns)
			return 2
		}
		opts.Conns = append(opts.Conns, n)
	}
	for _, s := range strings.Split(*chatUsers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 2 || n%2 != 0 {
			fmt.Fprintf(stderr, "mtnode bench: bad --chat-users %q (even counts, at least 2)\n", *chatUsers)
			return 2
		}
		opts.ChatUsers = append(opts.ChatUsers, n)
	}
	for _, s := range strings.Split(*fedUsers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 2 || n%2 != 0 {
			fmt.Fprintf(stderr, "mtnode bench: bad --fed-users %q (even counts, at least 2)\n", *fedUsers)
			return 2
		}
		opts.Federation.Users = append(opts.Federation.Users, n)
	}
	switch {
	case *wanDelay < 0:
		fmt.Fprintf(stderr, "mtnode bench: bad --wan-delay %s\n", *wanDelay)
		return 2
	case *wanDelay == 0:
		opts.Federation.WANDelay = -1 // no delayed pass
	default:
		opts.Federation.WANDelay = *wanDelay
	}
	if opts.Federation.NodesPerDC < 1 || opts.Federation.Backlog < 1 {
		fmt.Fprintln(stderr, "mtnode bench: --fed-nodes and --backlog must be at least 1")
		return 2
	}
	for _, s := range strings.Split(*nodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "mtnode bench: bad --nodes %q\n", *nodes)
			return 2
		}
		opts.Nodes = append(opts.Nodes, n)
	}
	for _, s := range strings.Split(*mtpStreams, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "mtnode bench: bad --mtproxy-streams %q\n", *mtpStreams)
			return 2
		}
		opts.MTProxy.Streams = append(opts.MTProxy.Streams, n)
	}
	opts.Transport = mtclient.Transport(*transport)
	opts.PingMethod = loadgen.PingMethod(*ping)
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if opts.Addr == "" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(stderr, "mtnode bench: find own executable:", err)
			return 1
		}
		opts.NodeBinary = exe
	}
	// A thousand connections, twice (client and child node ends).
	if _, err := loadgen.RaiseFDLimit(); err != nil {
		opts.Logger.Warn("could not raise the open file limit", "err", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := loadgen.Run(ctx, opts)
	if rep != nil {
		var werr error
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			werr = enc.Encode(rep)
		} else {
			werr = rep.Markdown(stdout)
		}
		if werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "mtnode bench:", err)
		return 1
	}
	return 0
}
