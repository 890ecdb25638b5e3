"""payflow-bench: a short real run against a spawned payflowd prints every figure; the mix parser
and the percentiles it reports are right. No timing thresholds: the figures' values are the
machine's business, their presence and meaning are the tool's."""

from __future__ import annotations

import io
import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from adapters.bench_report import FIGURES, figure, render
from adapters.bench_stats import (
    Outcome,
    Samples,
    latency_ms,
    merged,
    parse_mix,
    percentile,
    rate_in,
    worst_window_rate,
)

REPO = Path(__file__).resolve().parents[2]
BENCH = (sys.executable, str(REPO / "bin" / "payflow-bench"))


def _run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCH, *args], capture_output=True, text=True, timeout=110, check=False, cwd=REPO
    )


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """One short real run against a spawned payflowd, every outcome in the mix."""
    done = _run_bench(
        "--spawn", "--clients", "4", "--duration", "2", "--baseline-seconds", "1",
        "--push-frames", "20", "--mix", "success=0.5,decline=0.25,3ds=0.25", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


@pytest.mark.timeout(120)
def test_a_short_spawned_run_completes_flows_of_every_kind_and_prints_every_figure(
    document: dict[str, Any],
) -> None:
    for path in FIGURES:
        value = figure(document, path)
        assert isinstance(value, int | float), (path, value)
        assert math.isfinite(value), path
    ours = document["payflowd"]
    assert ours["flows_completed"] > 0
    assert ours["flows_failed"] == 0, ours["failure_reasons"]
    assert document["ceiling"]["flows_completed"] > 0
    # Every path ran: a decline was retried, a 3-D Secure step was passed.
    assert {"PAYMENT_PROCESSING->FAILED", "REQUIRES_ACTION->PAYMENT_PROCESSING"} <= set(
        ours["transitions"]
    )
    assert ours["provider_push_latency"]["count"] > 0
    assert ours["server_rss_mib"] > 0


@pytest.mark.timeout(120)
def test_the_table_shows_the_figures_the_run_measured(document: dict[str, Any]) -> None:
    out = io.StringIO()
    render(document, Console(file=out, width=120))
    table = out.getvalue()
    for label in ("completed flows/s", "push latency p99", "server peak RSS MiB", "raw websockets"):
        assert label in table
    assert f"{document['payflowd']['flows_completed']} / 0 / 0" in table
    assert "REQUIRES_ACTION->PAYMENT_PROCESSING" in table


def test_a_bad_mix_is_a_usage_error() -> None:
    done = _run_bench("--spawn", "--mix", "success=1,refund=1")
    assert done.returncode == 2
    assert "refund" in done.stderr


# --- the mix -------------------------------------------------------------------------------------


def test_mix_weights_are_normalised_and_drawn_in_proportion() -> None:
    mix = parse_mix("success=8, decline=1,3ds=1")
    assert mix.weights == {Outcome.SUCCESS: 0.8, Outcome.DECLINE: 0.1, Outcome.THREE_DS: 0.1}
    rng = random.Random(7)
    draws = [mix.draw(rng) for _ in range(5_000)]
    assert 0.75 < draws.count(Outcome.SUCCESS) / len(draws) < 0.85
    assert str(parse_mix("3ds=1,success=0")) == "3ds=1"


@pytest.mark.parametrize(
    "text",
    ["", "success=0", "success", "success=-1", "success=nan", "wire=1", "success=1,success=1"],
)
def test_a_mix_without_a_positive_known_weight_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="mix"):
        parse_mix(text)


# --- the numbers ---------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    samples = [float(n) for n in range(100, 0, -1)]  # 1..100, unsorted
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="percentile"):
        percentile(samples, 0)


def test_latency_figures_are_milliseconds() -> None:
    assert latency_ms([0.001, 0.002, 0.010]) == {"p50_ms": 2.0, "p99_ms": 10.0, "count": 3}
    assert latency_ms([]) == {"p50_ms": None, "p99_ms": None, "count": 0}


def test_rates_count_only_the_window_and_the_worst_slice_shows_a_stall() -> None:
    steady = [100.0 + i / 10 for i in range(100)]  # 10/s over [100, 110)
    assert rate_in(steady, 100.0, 10.0) == 10.0
    assert rate_in([*steady, 99.0, 110.5], 100.0, 10.0) == 10.0
    stalled = [t for t in steady if not 105.0 <= t < 110.0]
    assert worst_window_rate(steady, 100.0, 10.0, window=5.0) == 10.0
    assert worst_window_rate(stalled, 100.0, 10.0, window=5.0) == 0.0


def test_samples_from_several_processes_merge() -> None:
    one, two = Samples(), Samples()
    one.transition("PRE_BOOKING", "PAYMENT_PENDING", 0.01)
    two.transition("PRE_BOOKING", "PAYMENT_PENDING", 0.03)
    one.error("timeout")
    two.error("timeout")
    two.completed_at.append(1.0)
    total = merged([one, two])
    assert total.transitions == {"PRE_BOOKING->PAYMENT_PENDING": [0.01, 0.03]}
    assert total.errors == {"timeout": 2}
    assert total.completed_at == [1.0]
