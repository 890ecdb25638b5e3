"""Status fan-out through the bridge's Session.send next to raw websockets, in the same run.

    .venv/bin/python benchmarks/bridge_bench.py [--clients 1000] [--frames 200] [--rounds 3]

How the two processes work and the four modes (raw_send, raw_broadcast, bridge_loop,
bridge_thread) are described in adapters/bench_push.py, which this script runs.

The server yields to its loop once per fanned-out frame in every mode. Figures: frame
deliveries per second, wall time from "go" until the LAST connection holds its last frame (both
processes read the same system-wide monotonic clock), and the server's CPU time per delivery.
Modes are interleaved over the rounds (drift on a busy machine hits them alike); medians printed.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

from adapters.bench_push import MODES, Result, run_once, status_frame


def _median(results: list[Result], field: Callable[[Result], float]) -> str:
    values = [field(r) for r in results]
    return f"{statistics.median(values):>10,.1f} ({min(values):,.1f}-{max(values):,.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1_000)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.clients} connections x {args.frames} frames of {len(status_frame())} B")
    results: dict[str, list[Result]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            results[mode].append(run_once(mode, args.clients, args.frames))
    _report(results)


def _report(results: dict[str, list[Result]]) -> None:
    print(f"{'mode':<14} {'deliveries/s (min-max)':>30} {'server CPU us/delivery':>32}")
    for mode, runs in results.items():
        rate = _median(runs, lambda r: r.deliveries_per_s)
        cpu = _median(runs, lambda r: r.server_cpu_us_per_delivery)
        print(f"{mode:<14} {rate:>30} {cpu:>32}")
    rates = {m: statistics.median(r.deliveries_per_s for r in runs) for m, runs in results.items()}
    for mode in ("bridge_loop", "bridge_thread"):
        ratios = ", ".join(f"{rates[mode] / rates[raw]:.2f} of {raw}" for raw in MODES[:2])
        print(f"{mode}: {ratios} (deliveries/s)")


if __name__ == "__main__":
    main()
