package node

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mtnode/mtnode/cluster"
	"github.com/mtnode/mtnode/config"
	"github.com/mtnode/mtnode/messaging"
	"github.com/mtnode/mtnode/replication"
	"github.com/mtnode/mtnode/storage"
)

// metaGroup is the metadata group: the DC's shared secrets and shard
// count (see DESIGN.md, "Groups"). Group 1 is the directory; groups
// 2..n+1 hold users' boxes and auth keys by id.
const metaGroup replication.ShardID = messaging.MetaGroup

// dirGroup is the directory's group.
func (c *clusterNode) dirGroup() replication.ShardID {
	return replication.ShardID(c.layout.DirGroup())
}

// keyShard is the group that holds auth key id.
func (c *clusterNode) keyShard(id int64) replication.ShardID {
	return replication.ShardID(c.layout.KeyGroup(id))
}

// dirCommitTimeout bounds how long directory followers may go without
// hearing the leader's commit index.
const dirCommitTimeout = 20 * time.Millisecond

// layoutFor is the messaging layout of a DC of shards shards.
func layoutFor(shards, dc int) messaging.Layout {
	return messaging.Layout{Shards: shards, DC: dc, ShardOf: func(id int64, n int) int { return int(cluster.ShardOf(id, n)) }}
}

// clusterNode is the clustered half of a node: identity, mesh, gossip and
// the raft group its state lives in.
type clusterNode struct {
	cfg     *config.Config
	log     *slog.Logger
	id      cluster.NodeID
	db      *storage.DB
	mesh    *cluster.Mesh
	members *cluster.Membership
	fed     *federation // the WAN pool and the DC table
	relay   *relayer    // proxied clients of other DCs
	// faults programs the mesh socket's fault injector, faultConn; both
	// nil unless cluster.fault_injection.
	faults    *cluster.Faults
	faultConn net.PacketConn
	layout    messaging.Layout
	// pumpWake[g] wakes group g's outbox pump; pumps[g] is its state.
	pumpWake []chan struct{}
	pumps    []*pump
	// groups[g] is shard g's raft group on this node: 0 the data group,
	// 1..cluster.shards the auth key shards. trs and reps go with them.
	groups  []*replication.Group
	trs     []*raft.NetworkTransport
	reps    []*messaging.Replicated
	group   *replication.Group // groups[metaGroup]
	rep     *messaging.Replicated
	metrics *clusterMetrics
	rt      *router
	notify  messaging.Notifier
	events  *asyncNotifier // the data group's committed events, to notify
	// clientAddr is the client address this node advertises.
	clientAddr func() string

	mu        sync.Mutex
	downSince map[cluster.NodeID]time.Time
	leaving   bool
	ledSince  map[replication.ShardID]time.Time // groups this node leads, and since when

	wg   sync.WaitGroup
	ctx  context.Context // ends when the node stops
	stop context.CancelFunc
}

// newClusterNode builds the clustered parts; nothing talks to other nodes
// until run.
func newClusterNode(cfg *config.Config, log *slog.Logger, db *storage.DB, notify messaging.Notifier, m *clusterMetrics, clientAddr func() string) (_ *clusterNode, err error) {
	c := &clusterNode{
		cfg: cfg, log: log.With("component", "cluster"), db: db, metrics: m, notify: notify,
		clientAddr: clientAddr, downSince: map[cluster.NodeID]time.Time{},
		ledSince: map[replication.ShardID]time.Time{},
	}
	c.ctx, c.stop = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.id, err = nodeID(cfg, db.Table("meta")); err != nil {
		return nil, err
	}
	c.log = c.log.With("node", string(c.id))
	ca, err := cluster.LoadCA(cfg.Cluster.SecretsDir)
	if err != nil {
		return nil, fmt.Errorf("cluster.secrets_dir: %w", err)
	}
	cert, err := nodeCert(cfg.Cluster.SecretsDir, cfg.DataDir, c.id, ca)
	if err != nil {
		return nil, err
	}
	gossipKey, err := cluster.LoadGossipKey(cfg.Cluster.SecretsDir)
	if err != nil {
		return nil, fmt.Errorf("cluster.secrets_dir: %w", err)
	}
	mc := cluster.MeshConfig{ID: c.id, Addr: cfg.Cluster.MeshAddr, Cert: cert, CA: ca.Pool(), Logger: log, NoLane: !cfg.Cluster.TCPLane}
	if cfg.Cluster.FaultInjection {
		// The mesh's socket goes through the fault injector, which
		// POST /debug/faults programs (tests and WAN benchmarks).
		ua, err := net.ResolveUDPAddr("udp", cfg.Cluster.MeshAddr)
		if err != nil {
			return nil, fmt.Errorf("cluster.mesh_addr %s: %w", cfg.Cluster.MeshAddr, err)
		}
		uc, err := net.ListenUDP("udp", ua)
		if err != nil {
			return nil, fmt.Errorf("cluster.mesh_addr %s: %w", cfg.Cluster.MeshAddr, err)
		}
		c.faults = cluster.NewFaults()
		c.faultConn = cluster.WrapPacketConn(uc, c.faults)
		mc.PacketConn = c.faultConn
		mc.NoLane = true // the injector's rules cover UDP only
		log.Warn("mesh fault injection is on: POST /debug/faults drops or delays mesh traffic")
	}
	if c.mesh, err = cluster.NewMesh(mc); err != nil {
		return nil, fmt.Errorf("cluster.mesh_addr %s: %w", cfg.Cluster.MeshAddr, err)
	}
	layers := cluster.NewRaftLayers(c.mesh)
	rc := replication.DefaultRaftConfig()
	rc.SnapshotThreshold = uint64(cfg.Cluster.SnapshotEntries)
	rc.TrailingLogs = uint64(cfg.Cluster.SnapshotEntries)
	rc.SnapshotInterval = cfg.Cluster.SnapshotInterval.Duration
	// Group 0 holds the DC's facts, group 1 the directory, groups
	// 2..shards+1 users' boxes and auth keys by id (messaging.Layout). Every group's events are pushed
	// by whichever replica leads when they are applied, off raft's FSM
	// goroutine.
	c.events = newAsyncNotifier(notify, func() { m.pushFrames.WithLabelValues("dropped").Inc() })
	c.layout = layoutFor(cfg.Cluster.Shards, cfg.DC)
	for g := range c.layout.Groups() {
		rep := messaging.NewReplicated(c.events)
		rep.SetLayout(c.layout)
		wake := make(chan struct{}, 1)
		c.pumpWake = append(c.pumpWake, wake)
		c.pumps = append(c.pumps, newPump(c, g))
		rep.OnOutbox(func() { c.wakePump(g) })
		layer, err := layers.Layer(uint64(g))
		if err != nil {
			return nil, err
		}
		tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  layer,
			MaxPool: 3,
			Timeout: 10 * time.Second,
			Logger:  replication.NewHCLogger(log.With("component", "raft-transport", "shard", g)),
		})
		c.trs = append(c.trs, tr)
		grc := rc
		if g == c.layout.DirGroup() {
			// Directory reads are served by followers (shardReader), which
			// learn of a commit from the leader's next append; with no
			// traffic that comes every CommitTimeout. Keep it short here,
			// so an authorization or profile is seen DC-wide within tens
			// of milliseconds; other groups keep the cheap default.
			c := *rc
			c.CommitTimeout = dirCommitTimeout
			grc = &c
		}
		grp, err := replication.NewGroup(replication.Config{
			Raft:         grc,
			Shard:        replication.ShardID(g),
			ID:           raft.ServerID(c.id),
			DB:           db,
			Transport:    tr,
			StateMachine: rep,
			Logger:       log,
		})
		if err != nil {
			return nil, err
		}
		rep.PushWhenLeader(grp.IsLeader)
		c.groups, c.reps = append(c.groups, grp), append(c.reps, rep)
	}
	c.group, c.rep = c.groups[metaGroup], c.reps[metaGroup]
	if c.members, err = cluster.NewMembership(cluster.MembershipConfig{
		Mesh:      c.mesh,
		GossipKey: gossipKey,
		Meta:      c.nodeMeta(),
		OnEvent:   c.onEvent,
		Logger:    log,
	}); err != nil {
		return nil, err
	}
	fed, err := newFederation(c, gossipKey, db.Table("meta"))
	if err != nil {
		return nil, err
	}
	c.relay = &relayer{
		mesh: c.mesh, members: fed.membersOf, results: m.relayed, bytes: m.relayBytes,
		log: c.log, maxFrame: cfg.Protocol.MaxFrameSize,
	}
	c.mu.Lock() // onEvent reads it
	c.fed = fed
	c.mu.Unlock()
	return c, nil
}

// nodeMeta is what this node gossips about itself, in both pools.
func (c *clusterNode) nodeMeta() cluster.NodeMeta {
	return cluster.NodeMeta{
		DC: strconv.Itoa(c.cfg.DC), DCID: c.cfg.DC, ClientAddr: c.clientAddr(), Version: Version,
		IPv6Addr: c.cfg.PublicAddrV6, MediaOnly: c.cfg.Cluster.MediaOnly,
	}
}

// Version is what the node gossips as its version; cmd/mtnode sets it.
var Version = "(devel)"

// nodeID returns the configured node ID, else the one stored in the data
// directory, else a new one (stored). A configured ID that differs from the
// stored one is refused: the raft state belongs to the stored identity.
func nodeID(cfg *config.Config, meta *storage.Table) (cluster.NodeID, error) {
	stored, err := meta.Get([]byte("node_id"))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return "", fmt.Errorf("load node id: %w", err)
	}
	want := cluster.NodeID(cfg.Cluster.NodeID)
	switch {
	case stored != nil && want != "" && cluster.NodeID(stored) != want:
		return "", fmt.Errorf("cluster.node_id %q: this data directory belongs to node %q", want, stored)
	case stored != nil:
		return cluster.NodeID(stored), nil
	case want == "":
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		want = cluster.NodeID(fmt.Sprintf("n%x", b))
	}
	if err := want.Validate(); err != nil {
		return "", err
	}
	if err := meta.Put([]byte("node_id"), []byte(want)); err != nil {
		return "", fmt.Errorf("store node id: %w", err)
	}
	return want, nil
}

// nodeCert loads node.crt/node.key from the secrets directory when they
// are there (they must name this node), else uses the certificate this
// node issued itself from ca.key on an earlier start (kept in
// <data dir>/cluster), else issues and keeps a new one. Keeping it matters:
// the mesh's stateless reset key derives from the certificate's private
// key, and only a restart with the same key resets peers' connections to
// the node's former self at once instead of after their idle timeout.
func nodeCert(dir, dataDir string, id cluster.NodeID, ca *cluster.CA) (tls.Certificate, error) {
	if _, statErr := os.Stat(filepath.Join(dir, cluster.NodeCertFile)); statErr == nil {
		cert, err := cluster.LoadNodeCert(dir)
		if err != nil {
			return cert, fmt.Errorf("cluster.secrets_dir: %w", err)
		}
		if err := certFor(cert, id, ca); err != nil {
			return cert, fmt.Errorf("cluster.secrets_dir: node.crt: %w", err)
		}
		return cert, nil
	}
	if ca.Key == nil {
		return tls.Certificate{}, fmt.Errorf("cluster.secrets_dir %s: has neither node.crt nor ca.key to issue one", dir)
	}
	own := filepath.Join(dataDir, "cluster")
	if cert, err := cluster.LoadNodeCert(own); err == nil && certFor(cert, id, ca) == nil {
		return cert, nil
	}
	cert, err := cluster.IssueNodeCert(ca, id, nil, time.Now().Add(-time.Hour), cluster.DefaultNodeValidity)
	if err != nil {
		return cert, err
	}
	for _, f := range []string{cluster.NodeCertFile, cluster.NodeKeyFile, cluster.CACertFile} {
		os.Remove(filepath.Join(own, f))
	}
	if err := cluster.WriteNodeCert(own, cert, ca); err != nil {
		return cert, fmt.Errorf("keep node certificate: %w", err)
	}
	return cert, nil
}

// certFor checks that cert names node id, chains to ca and stays valid
// for at least a day.
func certFor(cert tls.Certificate, id cluster.NodeID, ca *cluster.CA) error {
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return err
	}
	if got, err := cluster.NodeIDFromCert(leaf); err != nil || got != id {
		return fmt.Errorf("certificate is for node %q, this node is %q", got, id)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: ca.Pool(), CurrentTime: time.Now().Add(24 * time.Hour),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return err
	}
	return nil
}

// run starts talking to the data center: serving the mesh, joining
// members, bootstrapping and the autopilot. It returns at once; close
// stops it all (after telling the others, which needs the mesh running).
func (c *clusterNode) run() {
	ctx := c.ctx
	c.spawn(func() {
		if err := c.mesh.Run(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("mesh stopped", "err", err)
		}
	})
	c.log.Info("cluster member starting", "mesh_addr", c.mesh.Addr().String(), "dc", c.cfg.DC)
	c.spawn(func() { c.events.run(ctx) })
	c.spawn(func() { c.joinLoop(ctx) })
	c.spawn(func() { c.fed.joinLoop(ctx) })
	if c.cfg.Cluster.BootstrapExpect > 0 {
		c.spawn(func() { c.bootstrapLoop(ctx) })
	}
	c.spawn(func() { c.autopilot(ctx) })
	c.spawn(func() { c.observe(ctx) })
	for g := range c.groups {
		c.spawn(func() { c.runPump(ctx, g) })
	}
}

func (c *clusterNode) spawn(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// joinLoop joins the configured members, and on a restart the peers of
// the node's own raft configuration, so a restart needs no --join. join
// is tried for a while; retry_join until it works.
func (c *clusterNode) joinLoop(ctx context.Context) {
	once := config.SplitAddrs(c.cfg.Cluster.Join)
	retry := config.SplitAddrs(c.cfg.Cluster.RetryJoin)
	for g := range c.groups {
		for _, s := range c.configurationOf(replication.ShardID(g)) {
			if cluster.NodeID(s.ID) != c.id && !slices.Contains(once, string(s.Address)) {
				once = append(once, string(s.Address))
			}
		}
	}
	if len(once)+len(retry) == 0 {
		return
	}
	deadline := time.Now().Add(time.Minute)
	for attempt := 0; ; attempt++ {
		var addrs []string
		if time.Now().Before(deadline) {
			addrs = append(addrs, once...)
		}
		addrs = append(addrs, retry...)
		if len(addrs) == 0 {
			c.log.Warn("could not join any member; waiting to be joined", "tried", once)
			return
		}
		n, err := c.members.JoinAny(ctx, addrs)
		if err == nil && (n > 0 || len(c.members.Members()) > 1) {
			c.log.Info("joined the data center", "contacted", n, "members", c.members.NumMembers())
			return
		}
		if attempt%10 == 0 {
			c.log.Warn("join failed, retrying", "addrs", addrs, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// configuration is the data group's current raft configuration (empty for
// a node that never had state).
func (c *clusterNode) configuration() []raft.Server { return c.configurationOf(metaGroup) }

// configurationOf is group g's configuration as this replica knows it.
func (c *clusterNode) configurationOf(g replication.ShardID) []raft.Server {
	f := c.groups[g].Raft().GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	return f.Configuration().Servers
}

// bootstrapLoop forms a new data center once BootstrapExpect members of
// this DC see each other. Every one of them computes the same first
// configuration from the same member list (the first BootstrapExpect by
// node ID, placed by cluster.Place), and those chosen as voters bootstrap
// it; raft treats identical bootstraps as one. A node with raft state
// never bootstraps, so a restart with --bootstrap-expect is safe.
func (c *clusterNode) bootstrapLoop(ctx context.Context) {
	if len(c.configuration()) > 0 {
		c.log.Info("raft state exists; not bootstrapping")
		return
	}
	expect := c.cfg.Cluster.BootstrapExpect
	last := time.Time{}
	for {
		if _, id := c.group.Leader(); id != "" || len(c.configuration()) > 0 {
			return // formed by others (or joined)
		}
		ms := c.dcMembers()
		if len(ms) >= expect {
			slices.SortFunc(ms, func(a, b cluster.Member) int { return cmpID(a.ID, b.ID) })
			ms = ms[:expect]
			place := cluster.Place(len(c.groups), ms, c.cfg.Cluster.ReplicationFactor)
			addrOf := map[cluster.NodeID]string{}
			for _, m := range ms {
				addrOf[m.ID] = m.Addr
			}
			for g, grp := range c.groups {
				voters := place.Shards[g].Voters
				if !slices.Contains(voters, c.id) {
					continue
				}
				var servers []raft.Server
				for _, v := range voters {
					servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(v), Address: cluster.RaftAddress(v, addrOf[v])})
				}
				err := grp.Bootstrap(servers)
				switch {
				case err == nil:
					if g == int(metaGroup) {
						c.log.Info("bootstrapped a new data center", "voters", voters, "shards", c.layout.Shards)
					}
				case errors.Is(err, raft.ErrCantBootstrap):
					c.log.Info("raft state exists; not bootstrapping", "shard", g)
				default:
					c.log.Error("bootstrap failed", "shard", g, "err", err)
				}
			}
			return
		}
		if time.Since(last) > 10*time.Second {
			c.log.Info("waiting for members to bootstrap", "have", len(ms), "expect", expect)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func cmpID(a, b cluster.NodeID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// dcMembers are the live members of this node's DC.
func (c *clusterNode) dcMembers() []cluster.Member {
	dc := strconv.Itoa(c.cfg.DC)
	var out []cluster.Member
	for _, m := range c.members.Members() {
		if m.MetaErr == nil && m.Meta.DC == dc {
			out = append(out, m)
		}
	}
	return out
}

// onEvent tracks since when members are down, for the autopilot's grace.
func (c *clusterNode) onEvent(ev cluster.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ev.Type {
	case cluster.EventJoin, cluster.EventUpdate:
		delete(c.downSince, ev.Member.ID)
		if ev.Type == cluster.EventJoin && c.fed != nil {
			c.fed.lanJoined(ev.Member)
		}
	case cluster.EventFail, cluster.EventLeave:
		if _, ok := c.downSince[ev.Member.ID]; !ok {
			c.downSince[ev.Member.ID] = time.Now()
		}
	}
	c.log.Info("membership", "event", ev.Type.String(), "member", string(ev.Member.ID), "addr", ev.Member.Addr)
}

// secretNames are the DC-wide secrets every node must share.
var secretNames = []string{"rsa_key", "salt_secret", "access_secret", "shards"}

// waitSecrets returns the DC's shared secrets, once the metadata group
// has them: read from the local replica, else asked of the leader (a node
// that holds no replica). The leader proposes fresh ones if there are
// none yet, or, in a DC that joins a federation, the federation's (asked
// of another DC's member); the first proposal wins.
func (c *clusterNode) waitSecrets(ctx context.Context, rt *router) (map[string][]byte, error) {
	var fresh []messaging.NamedSecret
	last := time.Now()
	for {
		if s, ok := c.localSecrets(); ok {
			return s, nil
		}
		if c.group.IsLeader() {
			if fresh == nil && c.fed.joined.Load() {
				s, err := c.fed.fetchSecrets(ctx)
				if err != nil {
					if time.Since(last) > 10*time.Second {
						c.log.Info("waiting for the federation's secrets", "err", err)
						last = time.Now()
					}
					if !sleepCtx(ctx, 500*time.Millisecond) {
						return nil, ctx.Err()
					}
					continue
				}
				for _, n := range secretNames[:3] {
					fresh = append(fresh, messaging.NamedSecret{Name: n, Value: s[n]})
				}
				fresh = append(fresh, messaging.NamedSecret{Name: "shards", Value: []byte(strconv.Itoa(c.layout.Shards))})
				c.log.Info("adopting the federation's secrets")
			}
			if fresh == nil {
				k, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					return nil, err
				}
				fresh = append(fresh, messaging.NamedSecret{Name: "rsa_key", Value: x509.MarshalPKCS1PrivateKey(k)})
				for _, n := range secretNames[1:3] {
					v := make([]byte, 32)
					rand.Read(v)
					fresh = append(fresh, messaging.NamedSecret{Name: n, Value: v})
				}
				// Not a secret, but fixed with the DC the same way.
				fresh = append(fresh, messaging.NamedSecret{Name: "shards", Value: []byte(strconv.Itoa(c.layout.Shards))})
			}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := c.rep.Propose(pctx, c.group, messaging.InitSecrets{Secrets: fresh}, messaging.Env{Now: time.Now().Unix()})
			cancel()
			if err != nil {
				c.log.Warn("propose secrets", "err", err)
			}
		} else if s, err := rt.fetchSecrets(ctx); err == nil {
			return s, nil
		}
		if time.Since(last) > 10*time.Second {
			_, leader := c.group.Leader()
			c.log.Info("waiting for the data center to form", "members", c.members.NumMembers(), "leader", string(leader))
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// localSecrets reads the shared secrets from this node's replica.
func (c *clusterNode) localSecrets() (map[string][]byte, bool) {
	out := map[string][]byte{}
	err := c.group.View(func(tx *storage.Txn) error {
		for _, n := range secretNames {
			v, ok, err := messaging.Secret(tx, n)
			if err != nil || !ok {
				return errors.New("missing")
			}
			out[n] = v
		}
		return nil
	})
	return out, err == nil
}

// close stops everything cluster-side. A plain shutdown does not leave the
// data center: a restarting node keeps its replicas.
func (c *clusterNode) close() {
	if c.members != nil {
		// A graceful stop says so, while the mesh still runs: the others
		// need not wait for failure detection, and a restart from a new
		// address is accepted at once.
		if err := c.members.Depart(time.Second); err != nil {
			c.log.Debug("depart", "err", err)
		}
	}
	if c.fed != nil {
		c.fed.close()
	}
	if c.stop != nil {
		c.stop()
	}
	if c.members != nil {
		c.members.Close()
	}
	for g, grp := range c.groups {
		if err := grp.Close(); err != nil {
			c.log.Warn("close raft group", "shard", g, "err", err)
		}
	}
	for _, tr := range c.trs {
		tr.Close()
	}
	if c.mesh != nil {
		c.mesh.Close()
	}
	if c.faultConn != nil {
		c.faultConn.Close()
	}
	c.wg.Wait()
}
