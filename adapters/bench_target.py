"""What payflow-bench measures against: a payflowd it starts (`--spawn`) or one already running
(`--url`), and the daemon's CPU and memory read from /proc while the load runs.

`--spawn` starts `python -m adapters.daemon_main` (the `payflowd` entry point) with the dummy
provider on port 0 for both servers, a journal and control socket in a temporary directory, and
JSON logs in a file there; the ports are read from its `daemon_ready` log line, so no port is
guessed and none can be taken in between.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import adapters

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    url: str
    http_url: str | None
    pid: int | None


@contextlib.contextmanager
def spawned_daemon(latency: float, extra_args: tuple[str, ...] = ()) -> Iterator[Target]:
    """A payflowd (dummy provider, simulated `latency`) for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="payflow-bench-") as workdir:
        work = Path(workdir)
        log_path = work / "payflowd.log"
        repo = str(Path(adapters.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": repo, "PAYFLOWD_LOG_FORMAT": "json"}
        command = [
            sys.executable,
            "-m",
            "adapters.daemon_main",
            "--provider",
            "dummy",
            "--dummy-latency",
            f"{latency:g}",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--db",
            str(work / "payflowd.db"),
            "--control",
            str(work / "payflowd.sock"),
            *extra_args,
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, our own module
                command, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            listen, http = _wait_ready(process, log_path)
            yield Target(
                url=f"ws://127.0.0.1:{listen}", http_url=f"http://127.0.0.1:{http}", pid=process.pid
            )
        finally:
            _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path) -> tuple[int, int]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"payflowd exited with {process.returncode}: {_tail(log_path)}")
        for line in log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "daemon_ready":
                    return int(event["listen_port"]), int(event["http_port"])
        time.sleep(0.1)  # polling the log file for the ready line, bounded by the deadline
    raise RuntimeError(f"payflowd not ready within {START_TIMEOUT_S} s: {_tail(log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT_S)


def _tail(path: Path) -> str:
    return " | ".join(path.read_text(errors="replace").splitlines()[-5:])


def listening_pid(port: int) -> int | None:
    """The pid of this user's process listening on TCP `port` (from /proc), or None."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _holds_socket(entry, inodes):
            return int(entry.name)
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(fields[9])
    return inodes


def _holds_socket(proc: Path, inodes: set[str]) -> bool:
    with contextlib.suppress(OSError):
        for fd in (proc / "fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return True
    return False


# --- CPU and memory ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (its threads included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores, since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / _TICKS, sum(fields) / _TICKS


class ProcessMeter:
    """CPU used and peak RSS of one process between `start()` and `stop()`, sampled by `tick()`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = 0
        self._cpu0 = self._wall0 = 0.0
        self.cpu_s = self.wall_s = 0.0

    def start(self) -> None:
        self._cpu0, self._wall0 = cpu_seconds(self.pid), time.monotonic()
        self.tick()

    def tick(self) -> None:
        with contextlib.suppress(OSError):
            self.peak_rss = max(self.peak_rss, rss_bytes(self.pid))

    def stop(self) -> None:
        self.tick()
        with contextlib.suppress(OSError):
            self.cpu_s = cpu_seconds(self.pid) - self._cpu0
        self.wall_s = time.monotonic() - self._wall0

    @property
    def cpu_percent(self) -> float:
        """Percent of one core over the measured time (200 = both cores of this machine)."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0
