#!/bin/bash
# What auditing costs: two servers side by side on the local PostgreSQL, A with `--audit off`
# and B audited, both `--auth off` on loopback, each on a fresh database; then
# `loadgen --against` runs reads and searches on both in alternating slices and prints the
# B/A throughput ratios (see the README's Benchmark section). Run by hand, never in CI.
#
#   cargo build --release --bin hearth --example loadgen
#   examples/audit_pair.sh              # PostgreSQL, Hearth and loadgen share all cores
#   PIN=1 examples/audit_pair.sh        # PostgreSQL on CPU 1, Hearth and loadgen on CPU 0
#
# Environment: BIN_A, BIN_B (default target/release/hearth), LOADGEN, PG (a server URL without
# a database; default postgres://postgres@127.0.0.1:5432), READS (40000), SLICE (2000),
# B_FLAGS (more flags for B). The databases hearth_pair_a and hearth_pair_b are dropped and
# made again.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
BIN_A=${BIN_A:-$here/target/release/hearth}
BIN_B=${BIN_B:-$BIN_A}
LOADGEN=${LOADGEN:-$here/target/release/examples/loadgen}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
READS=${READS:-40000}
SLICE=${SLICE:-2000}

for db in hearth_pair_a hearth_pair_b; do
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
done
logs=$(mktemp -d)
pids=()
stop() {
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    if [ -n "${PIN:-}" ]; then
        for p in $(pgrep -x postgres); do taskset -pc "0-$(($(nproc) - 1))" "$p" >/dev/null 2>&1 || true; done
    fi
}
trap stop EXIT

run=()
if [ -n "${PIN:-}" ]; then
    # New backends inherit the postmaster's affinity.
    for p in $(pgrep -x postgres); do taskset -pc 1 "$p" >/dev/null 2>&1 || true; done
    run=(taskset -c 0)
fi
"${run[@]}" "$BIN_A" serve --auth off --audit off --database-url "$PG/hearth_pair_a" \
    --listen 127.0.0.1:18091 >"$logs/a.log" 2>&1 &
pids+=($!)
# shellcheck disable=SC2086
"${run[@]}" "$BIN_B" serve --auth off --database-url "$PG/hearth_pair_b" \
    --listen 127.0.0.1:18092 ${B_FLAGS:-} >"$logs/b.log" 2>&1 &
pids+=($!)
for port in 18091 18092; do
    for _ in $(seq 120); do
        curl -sf "http://127.0.0.1:$port/fhir/metadata" >/dev/null && break
        sleep 0.5
    done
done
"${run[@]}" "$LOADGEN" --base http://127.0.0.1:18091/fhir --against http://127.0.0.1:18092/fhir \
    --connections 32 --requests 2000 --reads "$READS" --slice "$SLICE"
