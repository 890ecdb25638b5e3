"""payflow-bench's figures: one JSON-safe document (`--json` prints it as is) and its rendering.

`FIGURES` lists every number the report carries, as paths into the document; the smoke test checks
each one is present and numeric, so a figure cannot silently disappear.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from adapters.bench_push import Result
from adapters.bench_run import LoadRun
from adapters.bench_stats import latency_ms, rate_in, worst_window_rate

MIB = 1024 * 1024
FIGURES: tuple[str, ...] = (
    "payflowd.flows_per_s",
    "payflowd.flows_per_s_worst_5s",
    "payflowd.flows_completed",
    "payflowd.flows_failed",
    "payflowd.flows_unfinished",
    "payflowd.status_frames_per_s",
    "payflowd.push_latency.p50_ms",
    "payflowd.push_latency.p99_ms",
    "payflowd.provider_push_latency.p50_ms",
    "payflowd.provider_push_latency.p99_ms",
    "payflowd.server_rss_mib",
    "payflowd.server_cpu_percent",
    "payflowd.server_cpu_ms_per_flow",
    "payflowd.load_cpu_percent",
    "payflowd.machine_busy_percent",
    "ceiling.flows_per_s",
    "ceiling.push_latency.p50_ms",
    "ceiling.push_latency.p99_ms",
    "ceiling.server_cpu_percent",
    "ceiling.server_cpu_ms_per_flow",
    "raw_push.deliveries_per_s",
    "raw_push.server_cpu_us_per_delivery",
    "ratios.flows_per_s_vs_ceiling",
    "ratios.push_p50_vs_ceiling",
    "ratios.push_p99_vs_ceiling",
    "ratios.status_frames_per_s_vs_raw_push",
)


def load_figures(run: LoadRun) -> dict[str, Any]:
    samples = run.samples
    figures: dict[str, Any] = {
        "flows_per_s": round(rate_in(samples.completed_at, run.started, run.seconds), 1),
        "flows_per_s_worst_5s": round(
            worst_window_rate(samples.completed_at, run.started, run.seconds), 1
        ),
        "flows_completed": len(samples.completed_at),
        "flows_failed": sum(samples.errors.values()),
        "flows_unfinished": samples.unfinished,
        "failure_reasons": dict(samples.errors),
        "seconds": round(run.seconds, 2),
        "status_frames_per_s": round(samples.frames / run.seconds, 1) if run.seconds else 0.0,
        "push_latency": latency_ms(samples.push),
        "provider_push_latency": latency_ms(samples.provider_push),
        "transitions": {k: latency_ms(v) for k, v in sorted(samples.transitions.items())},
        "load_cpu_percent": round(100 * run.load_cpu_s / run.seconds, 1) if run.seconds else 0.0,
        "machine_busy_percent": round(100 * run.machine_busy, 1),
    }
    if run.server is not None:
        figures["server_rss_mib"] = round(run.server.peak_rss / MIB, 1)
        figures["server_cpu_percent"] = round(run.server.cpu_percent, 1)
        in_window = rate_in(samples.completed_at, run.started, run.seconds) * run.seconds
        # What a flow costs the server, less sensitive than flows/s to other load on the box.
        figures["server_cpu_ms_per_flow"] = (
            round(1000 * run.server.cpu_s / in_window, 3) if in_window else None
        )
    return figures


def raw_push_figures(result: Result, clients: int, frames: int) -> dict[str, Any]:
    return {
        "deliveries_per_s": round(result.deliveries_per_s, 1),
        "server_cpu_us_per_delivery": round(result.server_cpu_us_per_delivery, 2),
        "clients": clients,
        "frames": frames,
    }


def ratios(
    payflowd: Mapping[str, Any], ceiling: Mapping[str, Any], raw: Mapping[str, Any]
) -> dict[str, float | None]:
    """payflowd / baseline: above 1 is better for rates, worse for latencies."""
    push, bare = payflowd["push_latency"], ceiling["push_latency"]
    return {
        "flows_per_s_vs_ceiling": _ratio(payflowd["flows_per_s"], ceiling["flows_per_s"]),
        "push_p50_vs_ceiling": _ratio(push["p50_ms"], bare["p50_ms"]),
        "push_p99_vs_ceiling": _ratio(push["p99_ms"], bare["p99_ms"]),
        "server_cpu_ms_per_flow_vs_ceiling": _ratio(
            payflowd.get("server_cpu_ms_per_flow"), ceiling.get("server_cpu_ms_per_flow")
        ),
        "status_frames_per_s_vs_raw_push": _ratio(
            payflowd["status_frames_per_s"], raw["deliveries_per_s"]
        ),
    }


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or not theirs:
        return None
    return round(ours / theirs, 3)


def figure(document: Mapping[str, Any], path: str) -> Any:
    value: Any = document
    for key in path.split("."):
        value = value[key]
    return value


# --- rendering -----------------------------------------------------------------------------------


def render(document: Mapping[str, Any], console: Console) -> None:
    config = document["config"]
    console.print(
        f"[bold]payflow-bench[/]: {config['clients']} clients x {config['inflight']} in flight, "
        f"{config['processes']} load process(es), mix {config['mix']}, provider latency "
        f"{config['latency']} s, target {config['target']}"
    )
    console.print(_main_table(document))
    console.print(_transition_table(document))
    for note in document["notes"]:
        console.print(f"- {note}")


def _main_table(document: Mapping[str, Any]) -> Table:
    ours, bare, raw = document["payflowd"], document.get("ceiling"), document.get("raw_push")
    rates = document.get("ratios", {})
    table = Table(title="figures (latencies in ms)")
    for column in ("figure", "payflowd", "ceiling (bare asyncio)", "payflowd / ceiling"):
        table.add_column(column, justify="right" if column != "figure" else "left")
    rows = [
        ("completed flows/s", "flows_per_s", "flows_per_s_vs_ceiling"),
        ("  worst 5 s window", "flows_per_s_worst_5s", None),
        ("push latency p50", "push_latency.p50_ms", "push_p50_vs_ceiling"),
        ("push latency p99", "push_latency.p99_ms", "push_p99_vs_ceiling"),
        ("status frames/s", "status_frames_per_s", None),
        ("server CPU % of one core", "server_cpu_percent", None),
        ("server CPU ms per flow", "server_cpu_ms_per_flow", "server_cpu_ms_per_flow_vs_ceiling"),
        ("server peak RSS MiB", "server_rss_mib", None),
        ("load processes CPU %", "load_cpu_percent", None),
        ("machine busy % (all cores)", "machine_busy_percent", None),
    ]
    for label, path, ratio in rows:
        table.add_row(
            label, _cell(ours, path), _cell(bare, path), _fmt(rates.get(ratio)) if ratio else ""
        )
    table.add_row(
        "flows completed / failed / unfinished",
        _counts(ours),
        "" if bare is None else _counts(bare),
        "",
    )
    table.add_row(
        "3DS event -> COMPLETED p50 / p99",
        f"{_cell(ours, 'provider_push_latency.p50_ms')} / "
        f"{_cell(ours, 'provider_push_latency.p99_ms')}",
        "",
        "",
    )
    if raw is not None:
        table.add_row("raw websockets push, frames/s", "", "", _fmt(raw["deliveries_per_s"]))
        table.add_row(
            "payflowd status frames/s / raw push",
            "",
            "",
            _fmt(rates.get("status_frames_per_s_vs_raw_push")),
        )
    return table


def _transition_table(document: Mapping[str, Any]) -> Table:
    table = Table(title="time between consecutive statuses of a flow, as the client sees them (ms)")
    for column in ("transition", "count", "p50", "p99"):
        table.add_column(column, justify="left" if column == "transition" else "right")
    for name, figures in document["payflowd"]["transitions"].items():
        table.add_row(name, str(figures["count"]), _fmt(figures["p50_ms"]), _fmt(figures["p99_ms"]))
    return table


def _counts(part: Mapping[str, Any]) -> str:
    return f"{part['flows_completed']} / {part['flows_failed']} / {part['flows_unfinished']}"


def _cell(part: Mapping[str, Any] | None, path: str) -> str:
    if part is None:
        return ""
    try:
        return _fmt(figure(part, path))
    except KeyError:
        return "n/a"


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)
