"""Real servers on loopback for end-to-end tests: daphne processes and a private redis-server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    """The test database this pytest process uses, for a server process to share."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"mysql://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def wait_for_port(port: int, seconds: float = 30, process: subprocess.Popen | None = None) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {seconds}s")


@dataclass
class Daphne:
    host: str
    process: subprocess.Popen
    log: Path


@contextlib.contextmanager
def daphne_server(_asgi: str = "daphne", **env_overrides: str):
    """``daphne tracesite.asgi:application`` (or uvicorn) on a free port, sharing this test's database."""
    port = free_port()
    env = {
        **os.environ,
        "TRACESITE_ENV_FILE": "",
        "DATABASE_URL": database_url(),
        "PYTHONUNBUFFERED": "1",
        "TRACE_WRITER_PROCESS": "true",
        **env_overrides,
    }
    env = {k: v for k, v in env.items() if v is not None}
    path = Path(os.environ["TRACESITE_DATA_DIR"]) / f"daphne-{port}.log"
    with open(path, "w+") as log:
        command = {
            "daphne": ["daphne", "-b", "127.0.0.1", "-p", str(port)],
            "uvicorn": ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        }[_asgi]
        process = subprocess.Popen(
            [sys.executable, "-m", *command, "tracesite.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, process=process)
            yield Daphne(f"127.0.0.1:{port}", process, path)
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def daphne(**env_overrides: str):
    """``daphne_server``, giving its host:port."""
    with daphne_server(**env_overrides) as server:
        yield server.host


@contextlib.contextmanager
def uvicorn(**env_overrides: str):
    """The same application under uvicorn, giving its host:port."""
    with daphne_server("uvicorn", **env_overrides) as server:
        yield server.host


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class RedisServer:
    """A redis-server of the test's own, so a test can stop and restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.binary = shutil.which("redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, 10)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


def completed_trace(trace_id, seconds: float = 20):
    """The stored ``Trace`` once a server process has completed it."""
    from traces.models import Trace

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        trace = Trace.objects.filter(pk=trace_id).first()
        if trace is not None and trace.status != Trace.Status.RUNNING:
            return trace
        time.sleep(0.05)
    raise AssertionError(f"trace {trace_id} did not complete within {seconds} s")


def read_until(ws, event_type: str, timeout: float = 20) -> list[dict]:
    """Messages of a ``websockets`` sync client, up to and including the first ``event_type``."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        messages.append(json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
        if messages[-1]["event_type"] == event_type:
            return messages
