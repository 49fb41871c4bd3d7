#!/usr/bin/env bash
# Regenerates benches/RESULTS.md: the machine, the openraft comparison and a
# selection of raft-bench runs, with the exact commands. The file is only
# ever written by this script.
#
#   benches/run.sh                 # about 8 minutes on 2 cores
#   DURATION=5s SOAK=60s benches/run.sh
#   SOAK=600s benches/run.sh       # the 10-minute memory run
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
SOAK=${SOAK:-120s}
COMPARE_OPS=${COMPARE_OPS:-200000}
COMPARE_OPS_SINGLE=${COMPARE_OPS_SINGLE:-50000}
COMPARE_REPEAT=${COMPARE_REPEAT:-3}
OUT=benches/RESULTS.md

cargo build --release -p benches --bin raft-bench >&2
BIN=target/release/raft-bench
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT

# Runs a command, echoing it into the file first.
show() {
    echo
    echo '```sh'
    echo "$*" | sed "s#^$BIN#raft-bench#"
    echo '```'
    echo
}

header='| run | ops | errors | writes/s | p50 ms | p99 ms | p99.9 ms | max ms | notes |
|---|--:|--:|--:|--:|--:|--:|--:|---|'

# One raft-bench run as a table row; the command goes to a list below.
COMMANDS=()
row() {
    COMMANDS+=("raft-bench $*")
    echo "  running: raft-bench $*" >&2
    "$BIN" "$@" --row
}

{
    echo "# Benchmark results"
    echo
    echo "Written by \`benches/run.sh\`; do not edit by hand: run the script again."
    echo
    echo "## Machine"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- cores (nproc): $(nproc)"
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "- rustc: $(rustc --version)"
    echo "- build: \`cargo build --release -p benches --bin raft-bench\`"
    echo "- revision: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "- data directories (LMDB): $(df -T "${TMPDIR:-/tmp}" | awk 'NR==2 {print $2}') under ${TMPDIR:-/tmp}, fsync on every flush"
    echo "- allocator: mimalloc $(grep -A1 '^name = "mimalloc"$' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p') (raft-bench's global allocator, for every run and both libraries)"

    echo
    echo "## Disk"
    echo
    echo "What the disk under the data directories sustains in synced writes, alone: each"
    echo "writer overwrites a file of its own, 8 KiB at a time, and calls fdatasync after"
    echo "every write, as the LMDB journal does (one record and one sync per flush). The"
    echo "in-process tcp+lmdb clusters below run three nodes, whose three journals sync at"
    echo "once on this one disk; their rows give the fsyncs per second they made."
    show "$BIN disk --writers 1,2,3 --duration 5s"
    echo '| probe | syncs | errors | syncs/s | p50 ms | p99 ms | p99.9 ms | max ms | notes |'
    echo '|---|--:|--:|--:|--:|--:|--:|--:|---|'
    "$BIN" disk --writers 1,2,3 --duration 5s --row

    echo
    echo "## Peer baseline: ours vs openraft"
    echo
    echo "openraft's cluster benchmark workload, implemented for both libraries: 3 nodes in one"
    echo "process, a direct-call network (no serialization), an in-memory log that reports"
    echo "persisted at once, a state machine that does nothing, empty requests, N closed-loop"
    echo "clients, all on a 1-thread tokio runtime; throughput = operations / time until the"
    echo "leader applied all. Heartbeat 50 ms and at most 1024 entries per append for both."
    echo "The libraries alternate for $COMPARE_REPEAT rounds; the table gives each one's best round."
    echo "openraft: $(grep -A1 '^name = "openraft"$' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p')."
    show "$BIN compare --ops $COMPARE_OPS --ops-single $COMPARE_OPS_SINGLE --repeat $COMPARE_REPEAT"
    echo '```text'
    "$BIN" compare --ops "$COMPARE_OPS" --ops-single "$COMPARE_OPS_SINGLE" --repeat "$COMPARE_REPEAT"
    echo '```'

    echo
    echo "## Load generator: in-process clusters"
    echo
    echo "Closed loop unless a rate is given; $DURATION measured after a warm-up; every"
    echo "client writes its own 16 keys in turn through the group's leader; 3 nodes in one"
    echo "process (so the 2 cores serve all three nodes and the clients)."
    echo
    echo "$header"
    row --transport tcp --storage lmdb --nodes 3 --value-bytes 64 --clients 1 --duration "$DURATION"
    row --transport tcp --storage lmdb --nodes 3 --value-bytes 64 --clients 256 --duration "$DURATION"
    row --transport tcp --storage lmdb --nodes 3 --value-bytes 64 --clients 1024 --duration "$DURATION"
    row --transport tcp --storage lmdb --nodes 3 --value-bytes 64 --clients 256 --rate 2000 --duration "$DURATION"
    row --transport quic --storage lmdb --nodes 3 --value-bytes 64 --clients 256 --duration "$DURATION"
    row --transport mem --storage mem --nodes 3 --value-bytes 64 --clients 1 --duration "$DURATION"
    row --transport mem --storage mem --nodes 3 --value-bytes 64 --clients 256 --duration "$DURATION"
    row --transport tcp --storage mem --nodes 3 --value-bytes 64 --clients 256 --duration "$DURATION"
    echo
    echo "### 1 group vs 64 groups (3 nodes, 64 B, 256 clients, aggregate)"
    echo
    echo "$header"
    row --transport mem --storage mem --nodes 3 --groups 1 --value-bytes 64 --clients 256 --duration "$DURATION"
    row --transport mem --storage mem --nodes 3 --groups 64 --value-bytes 64 --clients 256 --duration "$DURATION"
    row --transport tcp --storage lmdb --nodes 3 --groups 1 --value-bytes 64 --clients 256 --duration "$DURATION"
    row --transport tcp --storage lmdb --nodes 3 --groups 64 --value-bytes 64 --clients 256 --duration "$DURATION"
    echo
    echo "### Memory over a longer run (compaction on: a snapshot every 10000 entries)"
    echo
    echo "$header"
    row --transport tcp --storage lmdb --nodes 3 --value-bytes 64 --clients 64 --snapshot-threshold 10000 --duration "$SOAK" --rss-every 20s
    echo
    echo "### Commands"
    echo
    echo '```sh'
    printf '%s\n' "${COMMANDS[@]}"
    echo '```'
} > "$TMP"
mv "$TMP" "$OUT"
trap - EXIT
echo "wrote $OUT" >&2
