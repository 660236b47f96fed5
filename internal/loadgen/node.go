package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// child is an mtnode started as a separate process, so that the server's
// CPU and memory are not mixed with the load generator's.
type child struct {
	cmd     *exec.Cmd
	dir     string
	addr    string // MTProto TCP address
	http    string // HTTP address (metrics)
	pubKey  string // server.pub path
	nodeID  string // cluster node id, if clustered
	exited  chan struct{}
	serving chan map[string]any
	waitErr error

	mu   sync.Mutex
	tail []string // last log lines, for error reports

	closeOnce sync.Once
}

// startTimeout bounds how long a child may take to print its "serving"
// line: opening Badger and, on first start, generating an RSA key.
const startTimeout = 60 * time.Second

// tailLines is how many of the child's log lines are kept for errors.
const tailLines = 20

// startChild runs `bin run` on loopback ephemeral ports in a fresh temp dir
// and waits for the "mtnode serving" JSON log line, which carries the bound
// addresses. procs > 0 sets the child's GOMAXPROCS.
func startChild(ctx context.Context, bin string, procs int) (c *child, err error) {
	dir, err := os.MkdirTemp("", "mtnode-bench-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	c, err = spawnChild(bin, procs, nil, []string{"run",
		"--data-dir", filepath.Join(dir, "data"),
		"--client-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0",
		"--log-format", "json",
		"--log-level", "info",
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c.dir = dir
	if err := c.waitServing(ctx, startTimeout); err != nil {
		return nil, err
	}
	return c, nil
}

// spawnChild starts `bin args...` with env added to this process's
// environment and returns at once; waitServing waits for its "mtnode
// serving" line. The child gets SIGKILL if this process dies (Linux), so
// no node outlives the bench.
func spawnChild(bin string, procs int, env, args []string) (*child, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	if procs > 0 {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(procs))
	}
	cmd.SysProcAttr = childSysProcAttr()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("child stderr: %w", err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	c := &child{cmd: cmd, exited: make(chan struct{}), serving: make(chan map[string]any, 1)}
	go c.readLogs(stderr, c.serving)
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// waitServing waits for the child's "mtnode serving" line and records the
// addresses it names. On failure the child is stopped (and its dir, if
// any, removed).
func (c *child) waitServing(ctx context.Context, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case line := <-c.serving:
		c.addr, _ = line["client_addr"].(string)
		c.http, _ = line["http_addr"].(string)
		c.pubKey, _ = line["public_key"].(string)
		c.nodeID, _ = line["node_id"].(string)
		if c.addr == "" || c.http == "" || c.pubKey == "" {
			c.Close()
			return fmt.Errorf("child serving line lacks addresses: %v", line)
		}
		return nil
	case <-c.exited:
		err := fmt.Errorf("child exited before serving: %v; log:\n%s", c.waitErr, c.logTail())
		c.Close()
		return err
	case <-timer.C:
		c.Close()
		return fmt.Errorf("child did not serve within %s; log:\n%s", timeout, c.logTail())
	case <-ctx.Done():
		c.Close()
		return ctx.Err()
	}
}

// kill ends the child with SIGKILL (kill -9) and waits until it is gone.
func (c *child) kill() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Kill()
	<-c.exited
}

// readLogs drains the child's stderr (a full pipe would block it), keeps the
// last lines and hands over the first "mtnode serving" line.
func (c *child) readLogs(r io.Reader, serving chan<- map[string]any) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		c.mu.Lock()
		c.tail = append(c.tail, line)
		if len(c.tail) > tailLines {
			c.tail = c.tail[1:]
		}
		c.mu.Unlock()
		if sent || !strings.Contains(line, `"mtnode serving"`) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "mtnode serving" {
			serving <- m
			sent = true
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

func (c *child) logTail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, "\n")
}

// errKilled is Close's error when the child ignored the interrupt.
var errKilled = errors.New("child did not stop after interrupt; killed")

// stopTimeout is how long a child gets to shut down after SIGINT.
const stopTimeout = 15 * time.Second

// Close stops the child (interrupt, then kill) and removes its data dir.
// Safe to call twice. It returns an error if the child had to be killed or
// exited with an error of its own.
func (c *child) Close() error {
	var err error
	c.closeOnce.Do(func() {
		select {
		case <-c.exited:
			err = fmt.Errorf("child exited early: %v; log:\n%s", c.waitErr, c.logTail())
		default:
			_ = c.cmd.Process.Signal(os.Interrupt)
			timer := time.NewTimer(stopTimeout)
			select {
			case <-c.exited:
				if c.waitErr != nil {
					err = fmt.Errorf("child: %w; log:\n%s", c.waitErr, c.logTail())
				}
			case <-timer.C:
				_ = c.cmd.Process.Kill()
				<-c.exited
				err = errKilled
			}
			timer.Stop()
		}
		if c.dir != "" {
			os.RemoveAll(c.dir)
		}
	})
	return err
}
