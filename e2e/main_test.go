package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// binary is the mtnode executable built by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain builds the binary into a temporary directory, runs the tests and
// removes the directory, returning the exit code (deferred calls do not run
// across os.Exit, hence the separate function).
func runMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "mtnode-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	binary = filepath.Join(tmp, "mtnode")
	build := exec.Command("go", "build", "-o", binary, "./cmd/mtnode")
	build.Dir = root
	build.Env = cleanEnv()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build mtnode: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// moduleRoot finds the directory of go.mod, falling back to the parent of
// this package's directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	return root, nil
}

// cleanEnv is the test's environment without MTNODE_* variables: the node
// rejects unknown ones, and known ones would silently change what a test
// starts.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MTNODE_") {
			env = append(env, kv)
		}
	}
	return env
}
