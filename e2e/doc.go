// Package e2e is the black-box suite: it builds the real mtnode binary once
// and drives it as an operator and a Telegram app would, through its command
// line, its signals, its log lines, its HTTP endpoints and the MTProto port,
// with gotd/td as the client. Nothing here reaches into the node's packages;
// what a test cannot see from outside the process, it does not check.
//
// The suite covers:
//
//   - quick start: "mtnode run" announces where it listens and where its
//     public key is; server.pub is a PKCS#1 PEM that gotd accepts and whose
//     fingerprint matches the log; /healthz and /metrics answer;
//   - persistence: over every transport, a client's session file outlives a
//     restart of the node, graceful (SIGTERM) or not (SIGKILL), and the client
//     resumes with its stored auth key, proved by the restarted process
//     counting no key exchange;
//   - the data-directory lock: a second node on the same directory exits
//     non-zero saying so, and the first keeps serving;
//   - graceful shutdown: SIGTERM with a client connected exits 0 promptly and
//     leaves a directory the next start opens with the same key;
//   - the command line: configuration errors exit 2 naming the bad key or
//     value; version and help exit 0; an unknown command exits 2;
//   - unimplemented methods: a 400 rpc_error that leaves the connection
//     serving;
//   - mtnode client: sign-up, send, history and listen through the binary's
//     own client, across a kill -9 of the node;
//   - durability: a node killed with SIGKILL mid-stream loses no
//     acknowledged message and duplicates none once clients retry.
//
// The package holds no code of its own outside tests; helpers live in
// _test.go files. Tests only listen on loopback and poll with waitFor
// instead of sleeping.
package e2e
