"""payflow-bench's baselines, measured in the same run as payflowd on the same machine:

- raw push: websockets `send` of a status-sized frame from one process to clients in another
  (adapters/bench_push.py, the same code as benchmarks/bridge_bench.py's `raw_send`): the rate
  at which this stack moves frames between two processes at all;
- ceiling: the bare asyncio happy path (adapters/bench_ceiling.py) driven by the same load
  driver, the same number of customers and the same provider latency, success outcomes only.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from dataclasses import replace
from pathlib import Path

from adapters.bench_ceiling import ceiling_main
from adapters.bench_load import LoadSpec
from adapters.bench_push import Result, run_once
from adapters.bench_run import LoadRun, Progress, run_load
from adapters.bench_stats import parse_mix

RAW_PUSH_MAX_CLIENTS = 1_000  # as benchmarks/bridge_bench.py; more only measures connect time


def raw_push(clients: int, frames: int) -> Result:
    """Deliveries per second of `frames` frames to each of `clients` connections."""
    return run_once("raw_send", max(1, min(clients, RAW_PUSH_MAX_CLIENTS)), frames)


def ceiling(
    spec: LoadSpec,
    *,
    processes: int,
    seconds: float,
    latency: float,
    progress: Progress,
    warmup: float = 0.0,
) -> LoadRun:
    """The ceiling server in its own process, loaded like payflowd but with success only."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="payflow-bench-ceiling-") as workdir:
        mine, theirs = context.Pipe()
        db = str(Path(workdir) / "ceiling.db")
        server = context.Process(target=ceiling_main, args=(db, latency, theirs), daemon=True)
        server.start()
        try:
            port = mine.recv()
            bare = replace(
                spec,
                url=f"ws://127.0.0.1:{port}",
                http_url=None,
                flows=None,
                mix=parse_mix("success=1"),
            )
            return run_load(
                bare,
                processes=processes,
                duration=seconds,
                server_pid=server.pid,
                progress=progress,
                warmup=warmup,
            )
        finally:
            mine.send("stop")
            server.join(10)
            if server.is_alive():
                server.kill()
