package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gotd/td/telegram"
	"go.uber.org/goleak"

	"github.com/mtnode/mtnode/config"
	"github.com/mtnode/mtnode/internal/mtclient"
	"github.com/mtnode/mtnode/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Badger and glog keep process-wide workers.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		// memberlist's last probe of a peer, started before Shutdown,
		// waits out its ack timeout (bounded by the probe interval).
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
	)
}

// startNode runs a node on loopback with ephemeral ports in dir.
func startNode(t *testing.T, dir string) (*Node, func()) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.ClientAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	n, err := New(&cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	return n, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node run: %v", err)
		}
	}
}

func clientFor(t *testing.T, n *Node, tr mtclient.Transport, sessionFile string) *telegram.Client {
	t.Helper()
	c, err := mtclient.New(mtclient.Options{
		Addr:          n.ClientAddr().String(),
		WSURL:         "ws://" + n.HTTPAddr().String() + "/apiws",
		PublicKeyFile: n.PublicKeyPath(),
		Transport:     tr,
		SessionFile:   sessionFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGetConfigOverEveryTransport(t *testing.T) {
	n, stop := startNode(t, t.TempDir())
	defer stop()
	for _, tr := range mtclient.Transports {
		t.Run(string(tr), func(t *testing.T) {
			c := clientFor(t, n, tr, "")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := c.Run(ctx, func(ctx context.Context) error {
				cfg, err := c.API().HelpGetConfig(ctx)
				if err != nil {
					return err
				}
				// gotd pings as a service message (even seqno); it must
				// get its pong, or gotd redials every keepalive period.
				if err := c.Ping(ctx); err != nil {
					return fmt.Errorf("ping: %w", err)
				}
				want := n.ClientAddr().(*net.TCPAddr)
				if cfg.ThisDC != 1 || len(cfg.DCOptions) != 1 ||
					cfg.DCOptions[0].IPAddress != want.IP.String() || cfg.DCOptions[0].Port != want.Port {
					t.Errorf("config: this_dc %d, options %+v; want dc 1 at %s", cfg.ThisDC, cfg.DCOptions, want)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestTemporaryKeysBound runs gotd with perfect forward secrecy: it creates
// a permanent key, then a temporary one, binds them with
// auth.bindTempAuthKey, and makes its calls on the temporary key.
func TestTemporaryKeysBound(t *testing.T) {
	n, stop := startNode(t, t.TempDir())
	defer stop()
	c, err := mtclient.New(mtclient.Options{
		Addr:          n.ClientAddr().String(),
		PublicKeyFile: n.PublicKeyPath(),
		Telegram:      telegram.Options{EnablePFS: true, TempKeyTTL: 3600},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Run(ctx, func(ctx context.Context) error {
		_, err := c.API().HelpGetConfig(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The server holds a temporary key bound to a permanent one.
	var temp, perm int
	err = n.db.Table("authkey").Scan(func(_, v []byte) error {
		var k protocol.AuthKey
		if err := k.UnmarshalBinary(v); err != nil {
			return err
		}
		if k.Temp {
			temp++
			if k.PermKeyID == 0 {
				t.Error("temporary key is not bound")
			}
		} else {
			perm++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if temp != 1 || perm != 1 {
		t.Fatalf("keys: %d temporary, %d permanent; want 1 and 1", temp, perm)
	}
}
