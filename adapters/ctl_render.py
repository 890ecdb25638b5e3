"""How payflowctl shows the daemon's answers to a person: rich tables and trees.

Every value from the daemon is shown as literal text (`Text`, never markup), so an id that
happens to contain `[bold]` is printed as sent. Renderers read with `.get`, so a daemon that adds
or lacks a field still gets a readable screen instead of a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

PS_COLUMNS = ("flow_id", "booking_id", "pre_id", "state", "version", "updated_at")
HISTORY_COLUMNS = ("version", "event", "state", "at")
SOCKET_COLUMNS = ("kind", "url", "state", "reconnects", "flows")
_TIME_KEYS = frozenset({"updated_at", "at", "created_at"})
# Off a terminal nothing tells rich the width; ids must not be cut for grep.
_PIPE_WIDTH = 200


def make_console(stream: TextIO) -> Console:
    width = None if stream.isatty() or "COLUMNS" in os.environ else _PIPE_WIDTH
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def _when(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return _plain(value)


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _cell(key: str, value: Any) -> Text:
    return Text(_when(value) if key in _TIME_KEYS else _plain(value))


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return _plain(seconds)
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (
        f"{days}d {hours:02d}h {minutes:02d}m {secs:02d}s"
        if days
        else (f"{hours}h {minutes:02d}m {secs:02d}s")
    )


def rows_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for column in columns:
        # On a narrow terminal an id is folded onto two lines, never cut short with an ellipsis.
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(column, row.get(column)) for column in columns))
    if not rows:
        table.caption = "(none)"
    return table


def fields_table(fields: Mapping[str, Any], title: str | None = None) -> Table:
    table = Table(box=None, show_header=False, title=title, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in fields.items():
        table.add_row(Text(key), _cell(key, value))
    return table


def render_status(status: Mapping[str, Any]) -> RenderableType:
    summary = {
        "uptime": _duration(status.get("uptime_s")),
        "actors": status.get("actors"),
        "sockets": status.get("sockets"),
        "errors/min": status.get("errors_per_min"),
    }
    flows = status.get("flows") or {}
    by_state = Table("state", "flows", box=box.SIMPLE_HEAD, title="flows", title_justify="left")
    for state, count in flows.items():
        by_state.add_row(Text(str(state)), Text(_plain(count)))
    by_state.add_row(Text("total", style="bold"), Text(str(sum(flows.values()))))
    return Group(fields_table(summary, "payflowd"), by_state)


def _tree_label(node: Mapping[str, Any]) -> Text:
    label = Text(_plain(node.get("name")), style="bold")
    label.append(f"  {_plain(node.get('kind'))}  {_plain(node.get('state'))}")
    label.append(f"  restarts={_plain(node.get('restarts'))}")
    return label


def _add_children(branch: Tree, node: Mapping[str, Any]) -> None:
    for child in node.get("children") or ():
        _add_children(branch.add(_tree_label(child)), child)


def render_tree(root: Mapping[str, Any]) -> RenderableType:
    tree = Tree(_tree_label(root))
    _add_children(tree, root)
    return tree


def render_ps(rows: Sequence[Mapping[str, Any]]) -> RenderableType:
    return rows_table(rows, PS_COLUMNS, f"flows ({len(rows)})")


def render_history(rows: Sequence[Mapping[str, Any]]) -> RenderableType:
    return rows_table(rows, HISTORY_COLUMNS, "history (oldest first)")


def render_sockets(rows: Sequence[Mapping[str, Any]]) -> RenderableType:
    return rows_table(rows, SOCKET_COLUMNS, f"sockets ({len(rows)})")


def render_inspect(flow: Mapping[str, Any]) -> RenderableType:
    nested = {"history", "tracker"}
    summary = {key: value for key, value in flow.items() if key not in nested}
    tracker = flow.get("tracker") or {}
    return Group(
        fields_table(summary, f"flow {_plain(flow.get('flow_id'))}"),
        fields_table(tracker, "tracker"),
        render_history(flow.get("history") or []),
    )


def render_action(result: Mapping[str, Any]) -> RenderableType:
    return fields_table(result)


def render_top(
    status: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, limit: int
) -> RenderableType:
    """`status` and the most recently updated flows, newest first."""
    recent = sorted(rows, key=lambda row: _sort_time(row.get("updated_at")), reverse=True)
    title = f"flows (latest {min(limit, len(rows))} of {len(rows)})"
    return Group(render_status(status), rows_table(recent[:limit], PS_COLUMNS, title))


def _sort_time(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


RENDERERS: Mapping[str, Callable[[Any], RenderableType]] = {
    "status": render_status,
    "tree": render_tree,
    "ps": render_ps,
    "inspect": render_inspect,
    "history": render_history,
    "sockets": render_sockets,
    "restart": render_action,
    "drain": render_action,
}
