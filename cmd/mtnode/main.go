// Command mtnode runs a Telegram-compatible messaging server node.
//
//	mtnode run [flags]   serve a node (a one-node DC by default)
//	mtnode client ...    a small command-line client (login, send, history, listen)
//	mtnode keygen ...    make a cluster's CA, gossip key and join token, or a node certificate
//	mtnode status        show the data center's members, leader and lag
//	mtnode leave         hand a node's replicas off and leave the data center
//	mtnode proxy secret  make MTProxy secrets and their tg://proxy links
//	mtnode version       print the version
//	mtnode help          print usage
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/mtnode/mtnode/config"
	"github.com/mtnode/mtnode/node"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `mtnode: a Telegram-compatible messaging server.

Usage:
  mtnode run [flags]    serve a node; with no flags, a one-node DC on loopback
  mtnode bench [flags]  measure a node under load (see BENCHMARKS.md)
  mtnode client CMD     try a node: login, send, history, listen ("mtnode client help")
  mtnode keygen --out DIR [--node-cert ID]
                        make a cluster CA, gossip key and join token, or a node certificate
  mtnode status [--http ADDR] [--json]
                        show a clustered node's data center: members, leader, lag
  mtnode leave [--http ADDR]
                        hand a node's replicas off, leave the data center, stop
  mtnode proxy secret [--fake-tls DOMAIN | --dd] [--server HOST --port N] [--count K]
                        make MTProxy secrets and print their tg://proxy links
  mtnode version        print the version
  mtnode help           print this help

Run "mtnode run -h" for the node's flags. Every setting can also come from a
TOML file (--config) or an MTNODE_* environment variable.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runNode(args[1:], stderr)
	case "bench":
		return runBench(args[1:], stdout, stderr)
	case "client":
		return runClient(args[1:], os.Stdin, stdout, stderr)
	case "keygen":
		return runKeygen(args[1:], stdout, stderr)
	case "status":
		return runStatus(args[1:], stdout, stderr)
	case "leave":
		return runLeave(args[1:], stdout, stderr)
	case "proxy":
		return runProxy(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "mtnode", version())
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mtnode: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// loadServeConfig parses the flags and configuration of `mtnode NAME`
// (run, proxy). code is the exit code when cfg is nil.
func loadServeConfig(name string, args []string, stderr io.Writer) (cfg *config.Config, fs *flag.FlagSet, code int) {
	fs = flag.NewFlagSet("mtnode "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	config.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, 0
		}
		return nil, nil, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mtnode %s: unexpected arguments %q\n", name, fs.Args())
		return nil, nil, 2
	}
	cfg, err := config.Load(fs, os.Environ())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, nil, 2
	}
	return cfg, fs, 0
}

func runNode(args []string, stderr io.Writer) int {
	return serveUntilSignal("run", args, stderr, func(cfg *config.Config, log *slog.Logger) (server, error) {
		return node.New(cfg, log)
	})
}

// server is what `mtnode run` and `mtnode proxy` start.
type server interface {
	Run(ctx context.Context) error
	Reload(cfg *config.Config) error
}

// serveUntilSignal loads the configuration of `mtnode NAME`, starts the
// server and runs it until SIGINT or SIGTERM, reloading it on SIGHUP.
func serveUntilSignal(name string, args []string, stderr io.Writer, start func(*config.Config, *slog.Logger) (server, error)) int {
	cfg, fs, code := loadServeConfig(name, args, stderr)
	if cfg == nil {
		return code
	}
	log := cfg.Logger(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	node.Version = version()
	s, err := start(cfg, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	go reloadOnHUP(ctx, config.Reloader(fs, os.Environ()), s.Reload, log)
	if err := s.Run(ctx); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	return 0
}

const proxyUsage = `Usage:
  mtnode proxy secret ...   make MTProxy secrets and their links ("mtnode proxy secret -h")
  mtnode proxy [flags]      run a storage-less MTProxy relay: --cluster SECRETS_DIR
                            --join MESH_ADDR (a node of any DC) --client-addr HOST:PORT,
                            secrets and front in [proxy] of --config; "mtnode proxy -h"
`

// runProxy dispatches `mtnode proxy`: `secret`, or the relay itself.
func runProxy(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "secret":
			return runProxySecret(args[1:], os.Environ(), rand.Reader, stdout, stderr)
		case "help":
			fmt.Fprint(stdout, proxyUsage)
			return 0
		}
	}
	return runProxyRelay(args, stderr)
}

// runProxyRelay is `mtnode proxy`: the storage-less relay. It takes the
// same configuration as `mtnode run` (cluster secrets, mesh and client
// addresses, [proxy]); --join names a node of the federation to learn the
// DCs from.
func runProxyRelay(args []string, stderr io.Writer) int {
	return serveUntilSignal("proxy", args, stderr, func(cfg *config.Config, log *slog.Logger) (server, error) {
		return node.NewProxy(cfg, log)
	})
}

// reloadOnHUP reads the configuration again on every SIGHUP and hands it
// to apply (a node's or proxy's Reload): proxy secrets can be added and
// revoked without a restart. A file that does not load changes nothing.
func reloadOnHUP(ctx context.Context, reload func() (*config.Config, error), apply func(*config.Config) error, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		cfg, err := reload()
		if err == nil {
			err = apply(cfg)
		}
		if err != nil {
			log.Error("configuration not reloaded", "err", err)
		}
	}
}
