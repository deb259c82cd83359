"""The benchmark scripts run, at a tiny scale, so they keep working; figures are in docs/benchmarks.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, timeout: float = 180) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


@pytest.mark.parametrize("server", ["emitter", "agent", "fastapi", "websockets"])
def test_live_fan_out_runs_and_loses_nothing(server):
    out = run(
        "bench/live.py",
        "--server",
        server,
        "--sessions",
        "3",
        "--traces",
        "2",
        "--repeat",
        "1",
        "--clients",
        "1",
        "--port",
        str(8900 + ["emitter", "agent", "fastapi", "websockets"].index(server) * 10),
    )
    row = re.search(r"run 1: delivered (\d+) stored (\w+) ", out)
    assert row, out
    delivered = int(row.group(1))
    assert delivered >= 3 * 2 * 30  # every trace arrived whole (36–39 events each)
    if server in ("emitter", "agent"):
        assert row.group(2) == str(delivered)  # zero loss: delivered = stored
    if server != "agent":
        assert delivered == 3 * 2 * 36  # the recorded trace, event for event


def test_replay_runs():
    out = run("bench/replay.py", "--events", "200", "--repeat", "1", "--port", "8950")
    assert re.search(r"replay run 1: 200 events", out), out
    assert "| embedded | detail page, 200 events |" in out


def test_connections_runs_and_the_broadcast_reaches_every_socket():
    out = run("bench/connections.py", "--sockets", "40", "--clients", "2", "--port", "8960")
    assert "| 40 / 40 |" in out.replace(",", ""), out


def test_soak_runs_and_checks_itself():
    out = run("bench/soak.py", "--minutes", "0.3", "--sessions", "3", "--drop", "0.05", "--port", "8970", timeout=240)
    assert "OK: no loss" in out, out


def history(tmp_path: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "bench/history.py", "--repeat", "1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": "/tmp",
            "PYTHONPATH": str(ROOT),
            "TRACESITE_DATA_DIR": str(tmp_path),
            "TRACESITE_ENV_FILE": "",
        },
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def test_history_runs_every_page_and_the_export(tmp_path):
    out = history(tmp_path, "--traces", "60")
    assert "filled 60 traces / 600 events" in out
    # The trace, the first screen of its run tree (a query a level: the steps, then their calls),
    # its run count, its scores, its re-runs, and the datasets "Add to dataset" offers.
    assert re.search(r"trace detail\s+[\d.]+\s+6 ", out), out
    # As a user who is not staff, with the visibility filter, and the admin's lists.
    assert "bench_user1, not staff, auth on" in out and re.search(r"admin, events\s+[\d.]+", out), out
    # One chunk of 60: the traces, their runs, their events, then the empty next page.
    assert re.search(r"everything\s+60 +[\d.]+ +[\d.]+ +[\d.]+ +4 ", out), out
    assert re.search(r"\d+ met, \d+ missed", out), out


def test_history_keeps_its_database_for_the_next_run(tmp_path):
    store = str(tmp_path / "kept")
    first = history(tmp_path, "--backend", "sqlite", "--store", store, "--traces", "40", "--no-export", "--keep")
    assert "filled 40 traces / 400 events" in first and (tmp_path / "kept" / "history-40.sqlite3").exists()
    again = history(tmp_path, "--backend", "sqlite", "--store", store, "--traces", "40", "--no-export", "--keep")
    assert "reused 40 traces (kept)" in again and "filled" not in again


def test_the_agent_database_benchmark_runs(tmp_path):
    out = run("bench/agentdb.py", "--backend", "sqlite", "--rows", "3000", "--repeat", "3", "--data-dir", str(tmp_path))
    assert "| table list |" in out and "| describe page_views |" in out, out
    answers = [line for line in out.splitlines() if line.startswith("| ") and line.rstrip().endswith("| success |")]
    assert len(answers) == 7, out  # every question answered by the built-in agent


def test_big_exports_run_and_time_the_pings():
    # Small bodies (about 0.5 MiB each), still over the size the server decodes on its event loop.
    out = run("bench/big_exports.py", "--exports", "2", "--spans", "400", "--port", "8981")
    assert "exports answered [200, 200]" in out and "stored: 800 runs of 800 spans" in out, out
    assert re.search(r"pings during the exports: +p50 [\d.]+ ms, p99 [\d.]+ ms", out), out


def test_replay_memory_runs_and_measures_the_servers_memory():
    out = run("bench/replay_memory.py", "--events", "300", "--clients", "2", "--slow-seconds", "2", "--port", "8982")
    assert re.search(r"daphne RSS: before \d+ MiB, peak with 2 stuck replays \d+ MiB", out), out


def test_evaluate_runs_an_experiment_and_times_the_live_page():
    out = run("bench/evaluate.py", "--items", "10", "--port", "8983")
    assert "items=10 concurrency=4: wall time" in out, out
    assert re.search(r"live page pings during the run: +p50 [\d.]+ ms", out), out


def test_ingest_runs_and_stores_every_span():
    out = run("bench/ingest.py", "--spans", "2000", "--batch", "256", "--senders", "2", "--port", "8980")
    assert "HTTP statuses: {200: 8}" in out, out
    assert "stored: 2,000 runs, 200 traces, 200 completed" in out, out


def bench_env(tmp_path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "PYTHONPATH": str(ROOT),
        "TRACESITE_DATA_DIR": str(tmp_path),
        "TRACESITE_ENV_FILE": "",
    }


def test_dashboard_times_every_range_sealed_and_from_the_traces(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench/dashboard.py", "--traces", "120", "--repeat", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=bench_env(tmp_path),
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert "filled 120 traces / 240 runs" in out.stdout
    assert re.search(r"^90d +one user +[\d.]+ +\d+ +[\d.]+ +\d+$", out.stdout, re.MULTILINE), out.stdout


def test_the_admin_lists_benchmark_times_every_list(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench/admin_lists.py", "--traces", "300", "--repeat", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=bench_env(tmp_path),
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert "sqlite, 300 traces" in out.stdout
    assert len(re.findall(r" ms \(\d+ ms of CPU here\)  \d+ queries", out.stdout)) == 7, out.stdout


def test_the_prune_benchmark_prunes_half_beside_live_traffic(tmp_path):
    out = run(
        "bench/prune.py", "--traces", "4000", "--sessions", "2", "--live-traces", "1", "--port", "8995", timeout=300
    )
    assert re.search(r"embedded: pruned [\d,]+ traces \(10 events each\) in [\d.]+ s; longest transaction \d+ ms", out)
    assert re.search(r"live during prune: p50 +[\d.]+ ms  p99 +[\d.]+ ms", out), out
