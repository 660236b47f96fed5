// Command etcdbench measures etcd put throughput as a comparison point for
// mtnode's replicated storage.
//
// By default it starts a 3-member etcd cluster on 127.0.0.1 (free ports, one
// temporary data dir per member, etcd's default durability: the WAL is
// fsynced before a write is acknowledged), waits until the cluster is
// healthy, and then drives puts of distinct keys from --concurrency
// concurrent workers. With --endpoints it drives an existing cluster
// instead.
//
// When it spawned the members it also measures CPU: the time the member
// processes and etcdbench itself spent on a CPU during the measured window,
// per put and as cores kept busy.
//
// Every loop is bounded both in time (--warmup + --duration, plus a per-put
// timeout) and in count (--max-ops).
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

type options struct {
	etcdPath    string
	endpoints   string
	members     int
	concurrency int
	conns       int
	valueSize   int
	warmup      time.Duration
	duration    time.Duration
	maxOps      int64
	opTimeout   time.Duration
	dataDir     string
	keepData    bool
	jsonOut     bool
}

// result is what gets printed; field names double as the --json schema.
type result struct {
	EtcdVersion   string  `json:"etcd_version"`
	Spawned       bool    `json:"spawned"`
	Members       int     `json:"members"`
	DataFS        string  `json:"data_fs,omitempty"`
	Endpoints     string  `json:"endpoints"`
	Concurrency   int     `json:"concurrency"`
	Conns         int     `json:"conns"`
	ValueSize     int     `json:"value_size"`
	WarmupSec     float64 `json:"warmup_s"`
	DurationSec   float64 `json:"duration_s"`
	ElapsedSec    float64 `json:"elapsed_s"`
	Puts          int64   `json:"puts"`
	Errors        int64   `json:"errors"`
	CappedByOps   bool    `json:"capped_by_max_ops"`
	PutsPerSec    float64 `json:"puts_per_sec"`
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
	MaxMs         float64 `json:"max_ms"`
	GOMAXPROCS    int     `json:"gomaxprocs"`
	NumCPU        int     `json:"num_cpu"`
	ClientVersion string  `json:"client_version"`

	// *cpuCost is nil, and its fields absent from the JSON, when CPU was
	// not measured; cpuNote then says why.
	*cpuCost
	cpuNote string
}

// cpuCost is the CPU spent during the measured window.
type cpuCost struct {
	EtcdCPUSec        float64 `json:"etcd_cpu_s"`            // sum over the members
	ClientCPUSec      float64 `json:"client_cpu_s"`          // etcdbench itself, all goroutines and the Go runtime
	EtcdCPUUsPerPut   float64 `json:"etcd_cpu_us_per_put"`   // EtcdCPUSec / puts
	ClientCPUUsPerPut float64 `json:"client_cpu_us_per_put"` // ClientCPUSec / puts
	EtcdCoresBusy     float64 `json:"etcd_cores_busy"`       // EtcdCPUSec / elapsed_s
}

// clientVersion is the etcd Go client pinned in go.mod.
const clientVersion = "go.etcd.io/etcd/client/v3 v3.5.17"

func main() {
	var o options
	flag.StringVar(&o.etcdPath, "etcd", "", "path to the etcd binary (default: `etcd` in PATH, then /usr/bin/etcd)")
	flag.StringVar(&o.endpoints, "endpoints", "", "comma-separated client URLs of an existing cluster; skips spawning")
	flag.IntVar(&o.members, "members", 3, "cluster size when spawning")
	flag.IntVar(&o.concurrency, "concurrency", 100, "number of concurrent put workers")
	flag.IntVar(&o.conns, "conns", 0, "number of etcd client connections shared by the workers (default: min(concurrency, 8))")
	flag.IntVar(&o.valueSize, "value-size", 64, "value size in bytes")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "warm-up period excluded from the results")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measurement period")
	flag.Int64Var(&o.maxOps, "max-ops", 2_000_000, "hard cap on puts issued (warm-up included)")
	flag.DurationVar(&o.opTimeout, "op-timeout", 10*time.Second, "timeout of a single put")
	flag.StringVar(&o.dataDir, "data-dir", "", "parent directory for the members' data dirs (default: the system temp dir)")
	flag.BoolVar(&o.keepData, "keep-data", false, "keep the members' data dirs and logs after exit")
	flag.BoolVar(&o.jsonOut, "json", false, "print the result as one JSON object instead of a human line")
	flag.Parse()

	if err := validate(&o); err != nil {
		fmt.Fprintln(os.Stderr, "etcdbench:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdbench:", err)
		os.Exit(1)
	}
}

func validate(o *options) error {
	switch {
	case o.concurrency < 1:
		return errors.New("--concurrency must be >= 1")
	case o.valueSize < 0:
		return errors.New("--value-size must be >= 0")
	case o.duration <= 0:
		return errors.New("--duration must be > 0")
	case o.warmup < 0:
		return errors.New("--warmup must be >= 0")
	case o.maxOps < 1:
		return errors.New("--max-ops must be >= 1")
	case o.opTimeout <= 0:
		return errors.New("--op-timeout must be > 0")
	case o.endpoints == "" && o.members < 1:
		return errors.New("--members must be >= 1")
	}
	if o.conns <= 0 {
		o.conns = min(o.concurrency, 8)
	}
	o.conns = min(o.conns, o.concurrency)
	return nil
}

func run(ctx context.Context, o options) error {
	res := result{
		Concurrency:   o.concurrency,
		Conns:         o.conns,
		ValueSize:     o.valueSize,
		WarmupSec:     o.warmup.Seconds(),
		DurationSec:   o.duration.Seconds(),
		GOMAXPROCS:    runtime.GOMAXPROCS(0),
		NumCPU:        runtime.NumCPU(),
		ClientVersion: clientVersion,
	}

	var endpoints []string
	var meter *cpuMeter
	if o.endpoints != "" {
		res.cpuNote = "external cluster"
		for _, e := range strings.Split(o.endpoints, ",") {
			if e = strings.TrimSpace(e); e != "" {
				endpoints = append(endpoints, e)
			}
		}
		if len(endpoints) == 0 {
			return errors.New("--endpoints is empty")
		}
	} else {
		bin, err := findEtcd(o.etcdPath)
		if err != nil {
			return err
		}
		c, err := startCluster(bin, o.members, o.dataDir)
		if c != nil {
			defer c.shutdown(o.keepData)
		}
		if err != nil {
			return err
		}
		endpoints = c.clientURLs
		res.Spawned = true
		res.DataFS = fsType(c.dir)
		if res.DataFS == "tmpfs" {
			fmt.Fprintln(os.Stderr, "etcdbench: warning: data dir is on tmpfs; fsync costs nothing there")
		}
		pids := make([]int, len(c.procs))
		for i, p := range c.procs {
			pids[i] = p.Process.Pid
		}
		if meter, err = newCPUMeter(pids); err != nil {
			res.cpuNote = err.Error()
			fmt.Fprintln(os.Stderr, "etcdbench: warning: CPU not measured:", err)
		}
	}
	res.Endpoints = strings.Join(endpoints, ",")

	clients := make([]*clientv3.Client, o.conns)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range clients {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   endpoints,
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			return fmt.Errorf("etcd client: %w", err)
		}
		clients[i] = c
	}

	version, members, err := waitHealthy(ctx, clients[0], endpoints, 30*time.Second)
	if err != nil {
		return err
	}
	res.EtcdVersion = version
	res.Members = members

	if err := drive(ctx, o, clients, meter, &res); err != nil {
		return err
	}

	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		return enc.Encode(res)
	}
	capped := ""
	if res.CappedByOps {
		capped = " (stopped early: --max-ops reached)"
	}
	fmt.Printf("etcd %s, %d members (%s): concurrency=%d conns=%d value=%dB: %.0f puts/s (%d puts in %.2fs, %d errors), p50=%.2fms p99=%.2fms max=%.2fms, %s%s\n",
		res.EtcdVersion, res.Members, where(res), res.Concurrency, res.Conns, res.ValueSize,
		res.PutsPerSec, res.Puts, res.ElapsedSec, res.Errors, res.P50Ms, res.P99Ms, res.MaxMs, cpuText(res), capped)
	return nil
}

func cpuText(r result) string {
	c := r.cpuCost
	if c == nil {
		return "CPU not measured (" + r.cpuNote + ")"
	}
	return fmt.Sprintf("CPU per put: etcd %.1fus, client %.1fus (etcd %.2fs = %.2f cores busy, client %.2fs)",
		c.EtcdCPUUsPerPut, c.ClientCPUUsPerPut, c.EtcdCPUSec, c.EtcdCoresBusy, c.ClientCPUSec)
}

func where(r result) string {
	switch {
	case !r.Spawned:
		return "external cluster"
	case r.DataFS == "":
		return "spawned, data on unknown fs"
	default:
		return "spawned, data on " + r.DataFS
	}
}

// drive runs the workers: warm-up, then the measured window. The window is
// bounded by two snapshots, taken when the warm-up ends and when the
// duration is up (or, if --max-ops runs out first, when the last worker
// stops); each reads the CPU counters when meter is not nil. A put counts
// toward the result if it completed successfully between the two
// snapshots, so the puts and the CPU cover the same interval.
func drive(ctx context.Context, o options, clients []*clientv3.Client, meter *cpuMeter, res *result) error {
	value := make([]byte, o.valueSize)
	if _, err := rand.Read(value); err != nil {
		return err
	}
	val := string(value)

	var (
		issued   atomic.Int64 // puts started, warm-up included; bounded by maxOps
		errCount atomic.Int64
		firstErr atomic.Value
	)
	start := time.Now()
	windowStart := start.Add(o.warmup)
	deadline := windowStart.Add(o.duration)
	// Only the end snapshot (or ctx) stops the workers, so the load runs
	// until the CPU counters have been read.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	// completion is a successful put: when it completed (since start) and
	// how long it took.
	type completion struct{ at, lat time.Duration }
	// Puts that complete before windowStart are never counted: the start
	// snapshot is taken at windowStart or later.
	recordFrom := windowStart.Sub(start)
	outs := make([][]completion, o.concurrency)
	var wg sync.WaitGroup
	for w := 0; w < o.concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cli := clients[w%len(clients)]
			for runCtx.Err() == nil {
				n := issued.Add(1)
				if n > o.maxOps {
					return
				}
				key := fmt.Sprintf("etcdbench/%012d", n)
				opCtx, opCancel := context.WithTimeout(runCtx, o.opTimeout)
				t0 := time.Now()
				_, err := cli.Put(opCtx, key, val)
				t1 := time.Now()
				opCancel()
				if err != nil {
					if runCtx.Err() != nil {
						return // window closed while the put was in flight
					}
					errCount.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				if at := t1.Sub(start); at >= recordFrom {
					outs[w] = append(outs[w], completion{at: at, lat: t1.Sub(t0)})
				}
			}
		}(w)
	}
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()

	first, ok := snapshotAt(ctx, windowStart, workersDone, false, meter)
	var last snapshot
	if ok {
		last, ok = snapshotAt(ctx, deadline, workersDone, true, meter)
	}
	cancel()
	<-workersDone
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}

	res.CappedByOps = issued.Load() > o.maxOps
	var all []time.Duration
	if ok {
		from, to := first.at.Sub(start), last.at.Sub(start)
		for _, out := range outs {
			for _, c := range out {
				if c.at >= from && c.at < to {
					all = append(all, c.lat)
				}
			}
		}
	}
	res.Errors = errCount.Load()
	if len(all) == 0 {
		if e, ok := firstErr.Load().(error); ok {
			return fmt.Errorf("no successful puts in the measured window (%d errors, first: %w)", res.Errors, e)
		}
		return errors.New("no successful puts in the measured window (raise --max-ops or --duration)")
	}
	if e, ok := firstErr.Load().(error); ok {
		fmt.Fprintf(os.Stderr, "etcdbench: %d put errors, first: %v\n", res.Errors, e)
	}

	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	elapsed := last.at.Sub(first.at)
	puts := float64(len(all))
	res.Puts = int64(len(all))
	res.ElapsedSec = elapsed.Seconds()
	res.PutsPerSec = puts / elapsed.Seconds()
	res.P50Ms = ms(percentile(all, 0.50))
	res.P99Ms = ms(percentile(all, 0.99))
	res.MaxMs = ms(all[len(all)-1])

	if meter != nil {
		if err := errors.Join(first.err, last.err); err != nil {
			res.cpuNote = err.Error()
			fmt.Fprintln(os.Stderr, "etcdbench: warning: CPU not measured:", err)
			return nil
		}
		etcd := (last.cpu.etcd - first.cpu.etcd).Seconds()
		client := (last.cpu.client - first.cpu.client).Seconds()
		res.cpuCost = &cpuCost{
			EtcdCPUSec:        etcd,
			ClientCPUSec:      client,
			EtcdCPUUsPerPut:   etcd * 1e6 / puts,
			ClientCPUUsPerPut: client * 1e6 / puts,
			EtcdCoresBusy:     etcd / elapsed.Seconds(),
		}
	}
	return nil
}

// snapshot is one edge of the measured window.
type snapshot struct {
	at  time.Time
	cpu cpuReading
	err error // reading the CPU counters failed
}

// snapshotAt waits until t and takes a snapshot. If the workers all stop
// before t, it takes the snapshot at once when early is set, and otherwise
// reports false (no puts can complete after that, so there is no window to
// start). It also reports false if ctx ends.
func snapshotAt(ctx context.Context, t time.Time, workersDone <-chan struct{}, early bool, meter *cpuMeter) (snapshot, bool) {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return snapshot{}, false
	case <-timer.C:
	case <-workersDone:
		if !early {
			return snapshot{}, false
		}
	}
	return takeSnapshot(meter), true
}

// takeSnapshot reads the CPU counters (if meter is not nil) and stamps the
// snapshot with the middle of the read, which takes well under a
// millisecond: far less than the 10ms resolution of /proc CPU times.
func takeSnapshot(meter *cpuMeter) snapshot {
	var s snapshot
	t0 := time.Now()
	if meter != nil {
		s.cpu, s.err = meter.read()
	}
	s.at = t0.Add(time.Since(t0) / 2)
	return s
}

// cpuMeter reads the CPU time consumed so far by the etcd members and by
// etcdbench itself.
type cpuMeter struct {
	pids []int
	hz   int64 // clock ticks per second, the unit of /proc/<pid>/stat times
}

// newCPUMeter returns a meter for the given member processes after checking
// that their counters can be read.
func newCPUMeter(pids []int) (*cpuMeter, error) {
	hz, err := clockTicksPerSec()
	if err != nil {
		return nil, fmt.Errorf("clock tick: %w", err)
	}
	m := &cpuMeter{pids: pids, hz: hz}
	if _, err := m.read(); err != nil {
		return nil, err
	}
	return m, nil
}

// cpuReading is the CPU time (user + system, all threads) consumed since
// each process started.
type cpuReading struct {
	etcd   time.Duration // sum over the members
	client time.Duration // etcdbench
}

func (m *cpuMeter) read() (cpuReading, error) {
	var r cpuReading
	var ticks int64
	for _, pid := range m.pids {
		t, err := procCPUTicks(pid)
		if err != nil {
			return cpuReading{}, fmt.Errorf("read CPU of etcd member pid %d: %w", pid, err)
		}
		ticks += t
	}
	r.etcd = time.Duration(ticks/m.hz)*time.Second + time.Duration(ticks%m.hz)*time.Second/time.Duration(m.hz)
	self, err := selfCPU()
	if err != nil {
		return cpuReading{}, fmt.Errorf("read own CPU: %w", err)
	}
	r.client = self
	return r, nil
}

// percentile returns the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// waitHealthy polls every endpoint's Status until all of them answer and
// agree on a leader, and returns the server version and member count.
func waitHealthy(ctx context.Context, cli *clientv3.Client, endpoints []string, timeout time.Duration) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var lastErr error
	for {
		version, err := clusterStatus(ctx, cli, endpoints)
		if err == nil {
			mctx, mcancel := context.WithTimeout(ctx, 2*time.Second)
			ml, merr := cli.MemberList(mctx)
			mcancel()
			if merr == nil {
				return version, len(ml.Members), nil
			}
			err = merr
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return "", 0, fmt.Errorf("cluster not healthy after %v: %v", timeout, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func clusterStatus(ctx context.Context, cli *clientv3.Client, endpoints []string) (string, error) {
	var version string
	var leader uint64
	for _, ep := range endpoints {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, ep)
		cancel()
		if err != nil {
			return "", fmt.Errorf("%s: %w", ep, err)
		}
		if st.Leader == 0 {
			return "", fmt.Errorf("%s: no leader yet", ep)
		}
		if leader != 0 && st.Leader != leader {
			return "", fmt.Errorf("%s: members disagree on the leader", ep)
		}
		leader = st.Leader
		if version != "" && st.Version != version {
			version += "/" + st.Version
		} else if version == "" {
			version = st.Version
		}
	}
	return version, nil
}

func findEtcd(flagPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/etcd"); err == nil {
		return "/usr/bin/etcd", nil
	}
	return "", errors.New("etcd binary not found in PATH or /usr/bin/etcd (apt-get install -y etcd-server, or pass --etcd)")
}

// cluster is a set of etcd member processes sharing one temp directory.
type cluster struct {
	dir        string
	procs      []*exec.Cmd
	logs       []*os.File
	clientURLs []string
}

func startCluster(bin string, members int, parent string) (*cluster, error) {
	dir, err := os.MkdirTemp(parent, "etcdbench-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir}

	ports, err := freePorts(2 * members)
	if err != nil {
		return c, err
	}
	names := make([]string, members)
	peerURLs := make([]string, members)
	var initial []string
	for i := range members {
		names[i] = fmt.Sprintf("m%d", i)
		c.clientURLs = append(c.clientURLs, fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]))
		peerURLs[i] = fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
		initial = append(initial, names[i]+"="+peerURLs[i])
	}
	token := fmt.Sprintf("etcdbench-%d-%d", os.Getpid(), time.Now().UnixNano())

	for i := range members {
		logf, err := os.Create(filepath.Join(dir, names[i]+".log"))
		if err != nil {
			return c, err
		}
		c.logs = append(c.logs, logf)
		// Only addressing flags: durability settings stay at etcd's
		// defaults, so every committed write is fsynced to the WAL.
		cmd := exec.Command(bin,
			"--name", names[i],
			"--data-dir", filepath.Join(dir, names[i]),
			"--listen-client-urls", c.clientURLs[i],
			"--advertise-client-urls", c.clientURLs[i],
			"--listen-peer-urls", peerURLs[i],
			"--initial-advertise-peer-urls", peerURLs[i],
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", token,
			"--logger", "zap",
			"--log-outputs", "stderr",
		)
		cmd.Stdout = logf
		cmd.Stderr = logf
		setPdeathsig(cmd)
		if err := cmd.Start(); err != nil {
			return c, fmt.Errorf("start %s: %w", bin, err)
		}
		c.procs = append(c.procs, cmd)
	}
	return c, nil
}

// shutdown stops the members (SIGTERM, then SIGKILL after 5s) and removes
// the temp directory unless keep is set.
func (c *cluster) shutdown(keep bool) {
	var wg sync.WaitGroup
	for _, p := range c.procs {
		wg.Add(1)
		go func(p *exec.Cmd) {
			defer wg.Done()
			_ = p.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = p.Process.Kill()
				<-done
			}
		}(p)
	}
	wg.Wait()
	for _, f := range c.logs {
		f.Close()
	}
	if keep {
		fmt.Fprintln(os.Stderr, "etcdbench: kept data and logs in", c.dir)
		return
	}
	_ = os.RemoveAll(c.dir)
}

// freePorts asks the kernel for n distinct free TCP ports on 127.0.0.1. The
// listeners are held until all ports are chosen, then released for etcd.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
