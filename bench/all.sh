#!/bin/sh
# Every figure in docs/benchmarks.md, in order: about 45 minutes on 2 cores, plus 20 for fuzzing
# and about an hour for the history at a million traces (less once its databases are kept).
# Needs MariaDB and Redis on loopback for the "mysql" rows (BENCH_MYSQL_URL / BENCH_REDIS_URL).
#   sh bench/all.sh 2>&1 | tee bench.log
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LIVE="$PY bench/live.py --sessions 10 50 200 --traces 5 --repeat 5"

# Live fan-out: the ceiling, the original design, tracesite (embedded, MariaDB + Redis; 1 and 2 processes).
$LIVE --server websockets
$LIVE --server fastapi
$LIVE --server emitter
$LIVE --server emitter --processes 2
$LIVE --server emitter --backend mysql
$LIVE --server emitter --backend mysql --processes 2
# Paced like an agent (an event every 50 ms per session): latency below saturation.
$PY bench/live.py --server fastapi --sessions 50 --traces 5 --gap-ms 50
$PY bench/live.py --server emitter --sessions 50 --traces 5 --gap-ms 50
$PY bench/live.py --server emitter --backend mysql --sessions 50 --traces 5 --gap-ms 50
# The same application under uvicorn, and the real built-in agent.
$PY bench/live.py --server emitter --sessions 50 --traces 5 --asgi uvicorn
$PY bench/live.py --server agent --sessions 50 --traces 5

# Replay and detail of a 1,000-event trace; idle sockets; the soak.
$PY bench/replay.py
$PY bench/replay.py --backend mysql
$PY bench/replay_memory.py
$PY bench/replay_memory.py --events 20000 --event-bytes 1000
$PY bench/connections.py --sockets 1000 5000
$PY bench/soak.py --minutes 10 --sessions 20
$PY bench/soak.py --minutes 10 --sessions 20 --backend mysql

# OTLP ingestion: as fast as 4 senders go, then paced below capacity.
$PY bench/ingest.py
$PY bench/ingest.py --backend mysql
$PY bench/ingest.py --spans 20000 --batch 64 --rate 1000 --senders 2
$PY bench/ingest.py --spans 50000 --rate 1000
# A socket's pings while large exports are decoded (protobuf; one trace an export; OTLP/JSON).
$PY bench/big_exports.py
$PY bench/big_exports.py --trace-spans 10000
$PY bench/big_exports.py --json --spans 5000

# The history at 1,000,000 traces / 10,000,000 events, each database kept between runs
# (/var/tmp/tracesite-history/, MariaDB tracesite_history_1m): filled once in bulk, reused after.
$PY bench/history.py --backend sqlite --traces 1000000 --keep
$PY bench/history.py --backend mysql --traces 1000000 --keep --buffer-pool 2G

# Fuzzing, 10 minutes each.
$PY bench/fuzz.py guard --minutes 10
$PY bench/fuzz.py validator --minutes 10
$PY bench/evaluate.py
$PY bench/evaluate.py --backend mysql
