package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/mtnode/mtnode/internal/cli"
)

// runClient is "mtnode client": a small command-line client for trying a
// node. Interrupting it ends listen cleanly.
func runClient(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli.Main(ctx, args, cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}
