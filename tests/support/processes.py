"""Real service processes for integration tests: start on free loopback ports, wait until ready,
always stop.

Every service prints ``PORT=<n>`` on stdout once it listens, so a test starts it with
``--port 0`` and reads the port back, like the TopGun integration harness does.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PORT_LINE = re.compile(rb"^PORT=(\d+)\s*$")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """One running service; ``port`` is what it announced."""

    args: list[str]
    proc: subprocess.Popen[bytes]
    port: int
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL at once: the crash the durability tests simulate."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def start_service(
    module: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 30.0,
    cwd: Path | None = None,
) -> ServiceProcess:
    """Run ``python -m module *args`` and wait for its ``PORT=<n>`` line on stdout.

    stderr is inherited so the service's logs appear in pytest's captured output on failure.
    """
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    if env:
        full_env.update(env)
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.Popen(
        cmd, cwd=str(cwd or ROOT), env=full_env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + ready_timeout
    buf = b""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode} before PORT=")
            if not sel.select(timeout=0.1):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                lines.append(line.decode(errors="replace"))
                m = _PORT_LINE.match(line.strip())
                if m:
                    return ServiceProcess(cmd, proc, int(m.group(1)), lines)
        raise TimeoutError(f"{' '.join(cmd)} printed no PORT= line within {ready_timeout}s")
    except BaseException:
        proc.kill()
        proc.wait(5)
        raise
    finally:
        sel.close()


@contextlib.contextmanager
def running(module: str, args: Sequence[str] = (), **kw: object) -> Iterator[ServiceProcess]:
    svc = start_service(module, args, **kw)  # type: ignore[arg-type]
    try:
        yield svc
    finally:
        svc.stop()


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``predicate()`` until it is truthy; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {predicate!r}")
