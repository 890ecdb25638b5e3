"""The real payflowd as a subprocess: free ports, a tmp journal and control socket, JSON logs.

    daemon = start_daemon(tmp_path)          # returns once /readyz answers 200
    daemon.ctl("ps", "--json")               # payflowctl against it
    assert daemon.stop() == 0                # SIGTERM, then the exit status

Logs (stderr, JSON lines) go to a file, never a pipe, so a chatty daemon can never block on a
full pipe while a test waits for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PAYFLOWD = (sys.executable, str(REPO / "bin" / "payflowd"))
PAYFLOWCTL = (sys.executable, str(REPO / "bin" / "payflowctl"))
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0  # the contract's bound for SIGTERM


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any PAYFLOWD_/STRIPE_ setting that could leak in."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PAYFLOWD_", "STRIPE_"))
    }
    env["PAYFLOWD_LOG_FORMAT"] = "json"
    env.update(extra or {})
    return env


def run_payflowd(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """payflowd run to completion (for invocations expected to exit at once)."""
    return subprocess.run(
        [*PAYFLOWD, *args],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    workdir: Path
    listen_port: int
    http_port: int
    db: Path
    control: Path
    log_path: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.listen_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def http_get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=5) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"payflowd exited with {self.process.returncode}:\n{self.log()}"
                )
            with contextlib.suppress(OSError):
                if self.http_get("/readyz")[0] == 200:
                    return
            time.sleep(0.05)  # polling /readyz: the condition itself is what we wait on
        raise AssertionError(f"payflowd not ready within {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send `sig` and return the exit status; fails the test past `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"payflowd did not exit within {timeout} s:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def ctl(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PAYFLOWCTL, "--control", str(self.control), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=clean_env(),
        )

    def ctl_json(self, *args: str) -> Any:
        done = self.ctl(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def restart(self) -> DaemonProcess:
        """A new daemon on the same journal, ports and socket (after `stop`)."""
        return launch(
            self.workdir, self.args, env=self.env, ports=(self.listen_port, self.http_port)
        )


def launch(
    workdir: Path,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    ports: tuple[int, int] | None = None,
    wait: bool = True,
) -> DaemonProcess:
    """Start payflowd in `workdir` (journal `payflowd.db`, socket `payflowd.sock` there)."""
    listen_port, http_port = ports or (free_port(), free_port())
    db, control = workdir / "payflowd.db", workdir / "payflowd.sock"
    log_path = workdir / f"payflowd-{time.monotonic_ns()}.log"
    command = [
        *PAYFLOWD,
        "--listen", f"127.0.0.1:{listen_port}",
        "--http", f"127.0.0.1:{http_port}",
        "--db", str(db),
        "--control", str(control),
        *args,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=clean_env(env), stdout=log, stderr=subprocess.STDOUT
        )
    daemon = DaemonProcess(
        process=process,
        workdir=workdir,
        listen_port=listen_port,
        http_port=http_port,
        db=db,
        control=control,
        log_path=log_path,
        args=list(args),
        env=dict(env or {}),
    )
    if wait:
        try:
            daemon.wait_ready()
        except BaseException:
            daemon.kill()
            raise
    return daemon


@contextlib.contextmanager
def running_daemon(
    workdir: Path, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None
) -> Iterator[DaemonProcess]:
    daemon = launch(workdir, args, env=env)
    try:
        yield daemon
    finally:
        daemon.kill()
