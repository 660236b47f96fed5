#!/usr/bin/env bash
# Idle cost of a 3-node data center by shard count: CPU per node and
# goroutines per node, measured over an idle window after the DC formed
# and its leadership settled. Usage: bench/cluster-idle.sh [SHARDS...]
# (default: 1 16 64). Runs on loopback; every process is killed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
shards=("$@")
[ $# -eq 0 ] && shards=(1 16 64)
settle=${SETTLE:-25}
window=${WINDOW:-30}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
go build -o "$work/mtnode" ./cmd/mtnode
"$work/mtnode" keygen --out "$work/secrets" >/dev/null
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
printf '| shards | groups per node | CPU per node (%% of a core) | goroutines per node |\n| --- | --- | --- | --- |\n'
for n in "${shards[@]}"; do
  pids=()
  base=$((20000 + n * 10))
  for i in 1 2 3; do
    MTNODE_CLUSTER_SHARDS=$n "$work/mtnode" run --cluster "$work/secrets" --data-dir "$work/d$n-$i" --node-id "n$i" \
      --mesh-addr "127.0.0.1:$((base + i))" --client-addr "127.0.0.1:$((base + 3 + i))" \
      --http-addr "127.0.0.1:$((base + 6 + i))" --bootstrap-expect 3 \
      --join "127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))" \
      --log-level warn >"$work/log$n-$i" 2>&1 &
    pids+=($!)
  done
  for i in 1 2 3; do
    for _ in $(seq 100); do
      curl -fs "127.0.0.1:$((base + 6 + i))/healthz" >/dev/null 2>&1 && break
      sleep 0.2
    done
  done
  sleep "$settle"
  declare -A t0
  for p in "${pids[@]}"; do t0[$p]=$(ticks "$p"); done
  sleep "$window"
  total=0
  for p in "${pids[@]}"; do total=$((total + $(ticks "$p") - ${t0[$p]})); done
  cpu=$(awk -v t="$total" -v hz="$hz" -v w="$window" 'BEGIN{printf "%.2f", t/hz/w/3*100}')
  g=0
  for i in 1 2 3; do
    v=$(curl -fs "127.0.0.1:$((base + 6 + i))/metrics" | awk '$1=="go_goroutines"{print $2}')
    g=$((g + ${v%.*}))
  done
  printf '| %d | %d | %s | %d |\n' "$n" $((n + 1)) "$cpu" $((g / 3))
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
done
