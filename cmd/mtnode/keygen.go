package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/mtnode/mtnode/cluster"
)

// runKeygen is `mtnode keygen`: make a cluster's secrets, or issue one
// node's certificate from them. It prints file names and the join token,
// never a private key or the gossip key.
func runKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mtnode keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "cluster secrets directory (required): ca.crt, ca.key, gossip.key, join.token")
	nodeID := fs.String("node-cert", "", "issue a certificate for this node ID from DIR's CA instead of making a new cluster")
	nodeDir := fs.String("node-dir", "", "where --node-cert writes node.crt, node.key and ca.crt (default DIR/nodes/ID)")
	hosts := fs.String("hosts", "", "comma-separated extra IPs or DNS names for --node-cert")
	validity := fs.Duration("validity", cluster.DefaultNodeValidity, "lifetime of a --node-cert certificate")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage:
  mtnode keygen --out DIR                    make a cluster CA, gossip key and join token
  mtnode keygen --out DIR --node-cert ID     issue node ID's certificate from DIR's CA

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	now := time.Now()
	if *nodeID == "" {
		s, err := cluster.Keygen(*out, now)
		if err != nil {
			fmt.Fprintln(stderr, "mtnode keygen:", err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s, %s (0600), %s (0600), %s (0600) in %s\n",
			cluster.CACertFile, cluster.CAKeyFile, cluster.GossipKeyFile, cluster.JoinTokenFile, *out)
		fmt.Fprintf(stdout, "CA valid until %s\n", s.CA.Cert.NotAfter.UTC().Format(time.RFC3339))
		fmt.Fprintf(stdout, "join token: %s\n", s.JoinToken)
		return 0
	}
	id := cluster.NodeID(*nodeID)
	ca, err := cluster.LoadCA(*out)
	if err != nil {
		fmt.Fprintln(stderr, "mtnode keygen:", err)
		return 1
	}
	var hs []string
	if *hosts != "" {
		hs = strings.Split(*hosts, ",")
	}
	cert, err := cluster.IssueNodeCert(ca, id, hs, now.Add(-time.Hour), *validity)
	if err != nil {
		fmt.Fprintln(stderr, "mtnode keygen:", err)
		return 1
	}
	dir := *nodeDir
	if dir == "" {
		dir = filepath.Join(*out, "nodes", string(id))
	}
	if err := cluster.WriteNodeCert(dir, cert, ca); err != nil {
		fmt.Fprintln(stderr, "mtnode keygen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s, %s (0600), %s for node %s in %s, valid until %s\n",
		cluster.NodeCertFile, cluster.NodeKeyFile, cluster.CACertFile, id, dir,
		cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return 0
}
