"""`payflow-bench`: how many payment flows per second payflowd carries on this machine, and how
fast a status reaches the customer, next to two baselines measured in the same run.

    payflow-bench --spawn --clients 200 --duration 60              # starts its own payflowd
    payflow-bench --url ws://127.0.0.1:8765 --http http://127.0.0.1:8766 --duration 30
    payflow-bench --spawn --clients 2500 --inflight 4 --latency 0.3 --duration 120 --warmup 30 \
        --processes 2 --json                                       # 10,000 flows in flight

What the figures mean (also printed under the table):
- completed flows/s: flows that reached COMPLETED inside the measured window / its length; the
  worst 5 s window shows whether the rate was sustained;
- push latency: for every status frame, the time it was received minus its `updated_at`, the
  instant the daemon applied the change (for COMPLETED: when the provider's answer reached the
  flow). It covers the journal's fsync, the fan-out and the websocket, as the customer sees it;
- 3DS event -> COMPLETED: from the moment the dummy provider changed the intent (the customer
  passed 3-D Secure through `POST /dummy/authenticate`) to the COMPLETED frame: the push path
  end to end, including the dummy's simulated 50 ms webhook delivery delay;
- per-transition latency: time between two consecutive status frames of one flow, received;
- server CPU and RSS from /proc/<pid> (CPU in % of one core: 200 is both cores of a 2-core box).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any
from urllib.parse import urlparse

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from adapters import bench_baselines
from adapters.bench_load import LoadSpec
from adapters.bench_report import load_figures, ratios, raw_push_figures, render
from adapters.bench_run import LoadRun, run_load
from adapters.bench_stats import parse_mix
from adapters.bench_target import Target, listening_pid, spawned_daemon

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payflow-bench", description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--spawn",
        action="store_true",
        help="start payflowd (dummy provider) on free ports, stop it after",
    )
    where.add_argument(
        "--url", help="bridge of a running payflowd (dummy provider), e.g. ws://127.0.0.1:8765"
    )
    parser.add_argument(
        "--http",
        help="its HTTP base URL, for the 3-D Secure hook (default: --url's host, port + 1)",
    )
    parser.add_argument(
        "--pid",
        type=int,
        help="its pid, for CPU and RSS (default: the process listening on --url's port)",
    )
    parser.add_argument(
        "--clients", type=int, default=100, help="websocket connections (default 100)"
    )
    parser.add_argument(
        "--inflight", type=int, default=1, help="flows in flight per connection (default 1)"
    )
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--duration", type=float, help="seconds to run (default 10)")
    amount.add_argument("--flows", type=int, help="run this many flows instead")
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="seconds after the start left out of rates and CPU (default 0)",
    )
    parser.add_argument(
        "--mix", type=_mix, default="success=1", help="e.g. success=0.8,decline=0.1,3ds=0.1"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="dummy provider latency in s (--spawn)"
    )
    parser.add_argument("--processes", type=int, default=1, help="load processes (default 1)")
    parser.add_argument(
        "--baseline-seconds", type=float, default=10.0, help="ceiling run length (default 10)"
    )
    parser.add_argument(
        "--push-frames", type=int, default=200, help="frames per connection, raw push baseline"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("--save", metavar="FILE", help="also write the JSON document to FILE")
    return parser


def _mix(text: str) -> str:
    try:
        parse_mix(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.clients, args.inflight, args.processes, args.push_frames) < 1:
        sys.stderr.write("payflow-bench: --clients, --inflight, --processes, --push-frames >= 1\n")
        return EXIT_USAGE
    if args.duration is None and args.flows is None:
        args.duration = 10.0
    if args.duration is not None and not 0 <= args.warmup < args.duration:
        sys.stderr.write("payflow-bench: --warmup must be >= 0 and below --duration\n")
        return EXIT_USAGE
    console = Console(stderr=True)
    try:
        document = _measure(args, console)
    except (OSError, RuntimeError) as error:
        console.print(f"payflow-bench: {error}")
        return EXIT_FAILED
    if args.save:
        with open(args.save, "w", encoding="utf-8") as saved:
            saved.write(json.dumps(document, indent=2) + "\n")
    if args.json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        render(document, Console(width=None if sys.stdout.isatty() else 110))
    return EXIT_OK if document["payflowd"]["flows_completed"] > 0 else EXIT_FAILED


def _measure(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    with _target(args) as target:
        spec = LoadSpec(
            url=target.url,
            http_url=target.http_url,
            clients=args.clients,
            inflight=args.inflight,
            flows=args.flows,
            mix=parse_mix(args.mix),
            seed=args.seed,
        )
        ours = _with_progress(
            console,
            "payflowd",
            args.duration,
            args.flows,
            lambda p: run_load(
                spec,
                processes=args.processes,
                duration=args.duration,
                server_pid=target.pid,
                progress=p,
                warmup=args.warmup,
            ),
        )
    bare_seconds = args.baseline_seconds
    bare = _with_progress(
        console,
        "ceiling",
        bare_seconds,
        None,
        lambda p: bench_baselines.ceiling(
            spec,
            processes=args.processes,
            seconds=bare_seconds,
            latency=args.latency,
            progress=p,
            warmup=min(args.warmup, bare_seconds / 2),
        ),
    )
    console.print("raw websockets push baseline ...")
    raw = bench_baselines.raw_push(args.clients, args.push_frames)
    push_clients = min(args.clients, bench_baselines.RAW_PUSH_MAX_CLIENTS)
    document = _document(args, target, ours, bare)
    document["raw_push"] = raw_push_figures(raw, push_clients, args.push_frames)
    document["ratios"] = ratios(document["payflowd"], document["ceiling"], document["raw_push"])
    return document


@contextmanager
def _target(args: argparse.Namespace) -> Iterator[Target]:
    if args.spawn:
        with spawned_daemon(args.latency) as target:
            yield target
        return
    parsed = urlparse(args.url)
    port = parsed.port or 8765
    http = args.http or f"http://{parsed.hostname}:{port + 1}"
    with nullcontext(
        Target(url=args.url, http_url=http, pid=args.pid or listening_pid(port))
    ) as target:
        yield target


def _with_progress(
    console: Console, label: str, duration: float | None, flows: int | None, work: Any
) -> LoadRun:
    columns = (
        TextColumn(f"{label:<9}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        total = flows if flows is not None else duration
        task = progress.add_task(label, total=total, status="connecting")

        def update(elapsed: float, completed: int, failed: int) -> None:
            done = completed + failed if flows is not None else min(elapsed, duration or 0.0)
            rate = completed / elapsed if elapsed > 0 else 0.0
            progress.update(
                task, completed=done, status=f"{completed} flows ({rate:,.0f}/s), {failed} failed"
            )

        run: LoadRun = work(update)
        return run


def _document(
    args: argparse.Namespace, target: Target, ours: LoadRun, bare: LoadRun
) -> dict[str, Any]:
    return {
        "command": "payflow-bench " + shlex.join(sys.argv[1:]),
        "config": {
            "clients": args.clients,
            "inflight": args.inflight,
            "processes": args.processes,
            "duration": args.duration,
            "warmup": args.warmup,
            "flows": args.flows,
            "mix": str(parse_mix(args.mix)),
            "latency": args.latency,
            "target": "spawned payflowd" if args.spawn else target.url,
            "server_pid": target.pid,
        },
        "payflowd": load_figures(ours),
        "ceiling": load_figures(bare),
        "notes": _notes(ours),
    }


def _notes(ours: LoadRun) -> list[str]:
    notes = [
        "push latency = status frame received - its updated_at (when the daemon applied the"
        " change), both on this machine's clock",
        "3DS event -> COMPLETED includes the dummy provider's simulated 50 ms webhook delay",
        "ceiling = bare asyncio + websockets + msgpack + sqlite (WAL, synchronous=FULL, group"
        " commit), success path only",
    ]
    if ours.server is None:
        notes.append("server CPU/RSS: no pid (give --pid), not measured")
    notes.extend(f"load failure: {f}" for f in ours.failures)
    return notes


if __name__ == "__main__":
    sys.exit(main())
