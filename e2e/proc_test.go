package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a node may take to log "mtnode serving". The
// first start of a data directory generates a 2048-bit RSA key.
const startTimeout = 20 * time.Second

// node is one running "mtnode run" process, with what its "mtnode serving"
// line said.
type node struct {
	t   *testing.T
	dir string
	cmd *exec.Cmd
	out *syncBuffer // stdout and stderr, shown when the test fails

	ClientAddr  string
	HTTPAddr    string
	PublicKey   string
	Fingerprint string
	NodeID      string // clustered nodes only
	MeshAddr    string

	serving chan servingLine
	done    chan struct{} // closed once the process exited and its output is read
	state   *os.ProcessState
}

// servingLine is the JSON log record the node writes once it serves.
type servingLine struct {
	Msg         string `json:"msg"`
	DC          int    `json:"dc"`
	ClientAddr  string `json:"client_addr"`
	HTTPAddr    string `json:"http_addr"`
	PublicKey   string `json:"public_key"`
	Fingerprint string `json:"fingerprint"`
	NodeID      string `json:"node_id"`
	MeshAddr    string `json:"mesh_addr"`
}

// syncBuffer is a bytes.Buffer safe for the writer goroutines of exec.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startNode runs mtnode on dir with ephemeral loopback ports and JSON logs,
// plus any extra flags, and returns once it logged "mtnode serving". The
// process is killed when the test ends; its output is logged if the test
// failed.
func startNode(t *testing.T, dir string, extra ...string) *node {
	t.Helper()
	n := launchNode(t, dir, extra...)
	n.waitServing(startTimeout)
	return n
}

// launchNode starts mtnode like startNode but returns at once; waitServing
// waits for its "mtnode serving" line. Nodes of a forming cluster serve
// only once enough of them are up, so they are launched together.
func launchNode(t *testing.T, dir string, extra ...string) *node {
	t.Helper()
	return launchNodeIn(t, nil, dir, extra...)
}

// launchNodeIn is launchNode with the command prefixed by wrap (for
// example "ip netns exec NS" to run the node in a network namespace).
func launchNodeIn(t *testing.T, wrap []string, dir string, extra ...string) *node {
	t.Helper()
	return launchIn(t, wrap, dir, "run", extra...)
}

// launchIn starts `mtnode sub` ("run", or "proxy" for the storage-less
// relay) with the test's defaults and extra arguments.
func launchIn(t *testing.T, wrap []string, dir, sub string, extra ...string) *node {
	t.Helper()
	args := append([]string{sub,
		"--data-dir", dir,
		"--client-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0",
		"--log-format", "json",
	}, extra...)
	n := &node{t: t, dir: dir, out: &syncBuffer{}, done: make(chan struct{}), serving: make(chan servingLine, 1)}
	argv := append(append(slices.Clone(wrap), binary), args...)
	n.cmd = exec.Command(argv[0], argv[1:]...)
	n.cmd.Env = cleanEnv()
	n.cmd.Stdout = n.out
	stderr, err := n.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start mtnode: %v", err)
	}
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			t.Logf("mtnode (pid %d, %s) output:\n%s", n.cmd.Process.Pid, n.exitString(), n.out.String())
		}
	})

	serving := n.serving
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			// One write per line, so stdout cannot land inside it; the copy
			// leaves the scanner's buffer alone.
			n.out.Write(append(append(make([]byte, 0, len(line)+1), line...), '\n'))
			var rec servingLine
			if json.Unmarshal(line, &rec) == nil && (rec.Msg == "mtnode serving" || rec.Msg == "mtnode proxy serving") {
				select {
				case serving <- rec:
				default:
				}
			}
		}
		// A line over the scanner's limit ends the scan; keep draining so
		// the node never blocks writing its log.
		_, _ = io.Copy(n.out, stderr)
		_ = n.cmd.Wait()
		n.state = n.cmd.ProcessState
		close(n.done)
	}()

	return n
}

// waitServing waits until the node logged "mtnode serving" and records
// what it said.
func (n *node) waitServing(timeout time.Duration) {
	n.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case rec := <-n.serving:
		n.ClientAddr, n.HTTPAddr = rec.ClientAddr, rec.HTTPAddr
		n.PublicKey, n.Fingerprint = rec.PublicKey, rec.Fingerprint
		n.NodeID, n.MeshAddr = rec.NodeID, rec.MeshAddr
	case <-n.done:
		n.t.Fatalf("mtnode exited before serving: %s", n.exitString())
	case <-timer.C:
		n.t.Fatalf("mtnode did not log \"mtnode serving\" within %v", timeout)
	}
}

// WSURL is the node's WebSocket endpoint.
func (n *node) WSURL() string { return "ws://" + n.HTTPAddr + "/apiws" }

// stop sends sig and waits up to timeout for the process to exit. It fails
// the test (and kills the process) when the node outlives the timeout.
func (n *node) stop(sig syscall.Signal, timeout time.Duration) *os.ProcessState {
	n.t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		n.t.Fatalf("signal %v: %v", sig, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-n.done:
		return n.state
	case <-timer.C:
		n.kill()
		n.t.Fatalf("mtnode still running %v after %v", timeout, sig)
		return nil
	}
}

// kill ends the process with SIGKILL, if it still runs, and waits for it.
func (n *node) kill() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Kill()
	<-n.done
}

func (n *node) exitString() string {
	select {
	case <-n.done:
		return n.state.String()
	default:
		return "running"
	}
}

// result is what a short-lived mtnode command did.
type result struct {
	stdout, stderr string
	code           int
}

// runCmd runs mtnode with args to completion, bounded by timeout, and
// returns its output and exit code.
func runCmd(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = cleanEnv()
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("mtnode %s: still running after %v\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), timeout, r.stdout, r.stderr)
	case err == nil:
		r.code = 0
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	default:
		t.Fatalf("mtnode %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// String describes r for failure messages.
func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}
