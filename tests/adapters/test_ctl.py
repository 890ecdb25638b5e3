"""payflowctl against a real control server: every command, human and --json, and exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.ctl import main
from tests.adapters.test_control import (
    FLOWS,
    HISTORY,
    SOCKETS,
    STATUS,
    TREE,
    FixedApi,
    ServedControl,
)
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def api() -> FixedApi:
    return FixedApi()


@pytest.fixture
def served(tmp_path: Path, api: FixedApi) -> Iterator[ServedControl]:
    with ServedControl(tmp_path / "payflowd.sock", api) as control:
        yield control


def ctl(
    capsys: pytest.CaptureFixture[str], served: ServedControl, *argv: str
) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what the server logged while starting
    code = main(["--control", str(served.path), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_ctl(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.ctl", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


INSPECTED = {
    **FLOWS[0],
    "history": HISTORY["flw_alpha"],
    "tracker": {"intent_id": "pi_1", "provider_status": "succeeded", "polling": False},
    "sessions": 1,
}
JSON_CASES = [
    pytest.param(argv, expected, id=" ".join(argv))
    for argv, expected in [
        (["status"], STATUS),
        (["tree"], TREE),
        (["ps"], FLOWS),
        (["ps", "--state", "payment_pending"], [FLOWS[1]]),
        (["inspect", "pre_100"], INSPECTED),
        (["history", "flw_beta"], HISTORY["flw_beta"]),
        (["sockets"], SOCKETS),
        (["restart", "bk_100"], {"restarted": "flw_alpha"}),
        (["drain"], {"draining": True, "in_flight": 1}),
    ]
]


@pytest.mark.parametrize(("argv", "expected"), JSON_CASES)
def test_json_is_one_document_with_stable_keys(
    capsys: pytest.CaptureFixture[str], served: ServedControl, argv: list[str], expected: Any
) -> None:
    code, out, err = ctl(capsys, served, *argv, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == expected
    assert out == json.dumps(expected, indent=2, sort_keys=True) + "\n"


def test_json_may_come_before_the_command(
    capsys: pytest.CaptureFixture[str], served: ServedControl
) -> None:
    code, out, _err = ctl(capsys, served, "--json", "status")
    assert code == 0
    assert json.loads(out) == STATUS


def lines_with(out: str, text: str) -> list[str]:
    return [line for line in out.splitlines() if text in line]


def test_status_shows_uptime_counts_and_flows_by_state(
    capsys: pytest.CaptureFixture[str], served: ServedControl
) -> None:
    code, out, _err = ctl(capsys, served, "status")
    assert code == 0
    assert "1h 02m 03s" in out
    assert lines_with(out, "actors")[0].split()[-1] == "5"
    assert lines_with(out, "PAYMENT_PENDING")[0].split()[-1] == "1"
    assert lines_with(out, "total")[0].split()[-1] == "2"


def test_tree_draws_children_under_their_parents(
    capsys: pytest.CaptureFixture[str], served: ServedControl
) -> None:
    code, out, _err = ctl(capsys, served, "tree")
    assert code == 0
    rows = out.splitlines()
    indent = {name: next(r.index(name) for r in rows if name in r) for name in ("root", "flows")}
    leaf = next(r for r in rows if "flow:flw_alpha" in r)
    assert indent["root"] < indent["flows"] < leaf.index("flow:flw_alpha")
    assert "restarts=1" in lines_with(out, "socket_manager")[0]


def test_ps_lists_every_flow_with_readable_times(
    capsys: pytest.CaptureFixture[str], served: ServedControl
) -> None:
    code, out, _err = ctl(capsys, served, "ps")
    assert code == 0
    alpha = lines_with(out, "flw_alpha")[0].split()
    assert alpha[:5] == ["flw_alpha", "bk_100", "pre_100", "COMPLETED", "6"]
    assert when(FLOWS[0]["updated_at"]) in lines_with(out, "flw_alpha")[0]
    assert lines_with(out, "flw_beta")[0].split()[1] == "-"  # no booking id yet


def test_ps_state_filters(capsys: pytest.CaptureFixture[str], served: ServedControl) -> None:
    code, out, _err = ctl(capsys, served, "ps", "--state", "COMPLETED")
    assert code == 0
    assert "flw_alpha" in out
    assert "flw_beta" not in out


def test_inspect_shows_flow_tracker_and_history(
    capsys: pytest.CaptureFixture[str], served: ServedControl
) -> None:
    code, out, _err = ctl(capsys, served, "inspect", "bk_100")
    assert code == 0
    assert lines_with(out, "pre_id")[0].split()[-1] == "pre_100"
    assert lines_with(out, "provider_status")[0].split()[-1] == "succeeded"
    assert lines_with(out, "sessions")[0].split()[-1] == "1"
    assert out.index("flow_created") < out.index("payment_succeeded")


def test_history_is_oldest_first(capsys: pytest.CaptureFixture[str], served: ServedControl) -> None:
    code, out, _err = ctl(capsys, served, "history", "flw_alpha")
    assert code == 0
    versions = [line.split()[0] for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert versions == ["1", "2", "6"]
    assert when(HISTORY["flw_alpha"][0]["at"]) in out


def test_sockets_show_clients_and_feeds(
    capsys: pytest.CaptureFixture[str], served: ServedControl
) -> None:
    code, out, _err = ctl(capsys, served, "sockets")
    assert code == 0
    assert lines_with(out, "ws://127.0.0.1:9999/feed")[0].split() == [
        "feed",
        "ws://127.0.0.1:9999/feed",
        "connecting",
        "3",
        "0",
    ]
    assert lines_with(out, "client")[0].split()[:3] == ["client", "-", "open"]


@pytest.mark.parametrize(
    ("argv", "shown"),
    [(["restart", "pre_200"], ("restarted", "flw_beta")), (["drain"], ("draining", "True"))],
)
def test_actions_show_what_the_daemon_did(
    capsys: pytest.CaptureFixture[str],
    served: ServedControl,
    argv: list[str],
    shown: tuple[str, str],
) -> None:
    code, out, _err = ctl(capsys, served, *argv)
    assert code == 0
    assert lines_with(out, shown[0])[0].split() == list(shown)


class MarkupApi(FixedApi):
    def ps(self, state: str | None) -> list[dict[str, Any]]:
        return [{**FLOWS[0], "flow_id": "[bold]flw_x[/bold]"}]


def test_values_are_printed_literally_not_as_markup(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with ServedControl(tmp_path / "m.sock", MarkupApi()) as control:
        code, out, _err = ctl(capsys, control, "ps")
    assert code == 0
    assert "[bold]flw_x[/bold]" in out


def test_top_shows_status_and_flows_for_a_given_count(served: ServedControl) -> None:
    result = run_ctl("--control", str(served.path), "top", "--count", "2", "--interval", "0.05")
    assert result.returncode == 0, result.stderr
    assert "1h 02m 03s" in result.stdout
    assert "flw_alpha" in result.stdout
    # newest first: alpha was updated after beta
    assert result.stdout.index("flw_alpha") < result.stdout.index("flw_beta")


def start_top(path: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "adapters.ctl", "--control", str(path), "top"]
    return subprocess.Popen(
        [*argv, "--interval", "0.05"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_top_ends_cleanly_on_ctrl_c(served: ServedControl, api: FixedApi) -> None:
    top = start_top(served.path)
    wait_until(lambda: api.calls.count("ps") >= 2, "top to refresh twice")
    top.send_signal(signal.SIGINT)
    out, err = top.communicate(timeout=10)
    assert top.returncode == 0, err
    assert "flw_alpha" in out


def test_top_exits_3_when_the_daemon_goes_away(served: ServedControl, api: FixedApi) -> None:
    top = start_top(served.path)
    wait_until(lambda: api.calls.count("ps") >= 1, "top to refresh")
    served.stop()
    _out, err = top.communicate(timeout=10)
    assert top.returncode == 3
    assert str(served.path) in err


# --- exit codes, as a shell sees them --------------------------------------------------------


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_no_socket_file_is_exit_3_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.sock"
    result = run_ctl("--control", str(path), "status")
    assert result.returncode == 3
    assert str(path) in one_line(result.stderr)
    assert result.stdout == ""


def test_a_refused_connection_is_exit_3(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    result = run_ctl("--control", str(path), "ps", "--json")
    assert result.returncode == 3
    assert "refused" in one_line(result.stderr)


def test_a_daemon_that_does_not_answer_is_exit_3(tmp_path: Path) -> None:
    path = tmp_path / "mute.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(path))
        mute.listen(1)  # accepts connections into the backlog, never answers
        result = run_ctl("--control", str(path), "--timeout", "0.3", "status")
    assert result.returncode == 3
    assert "no answer within 0.3 s" in one_line(result.stderr)


@pytest.mark.parametrize("command", ["inspect", "history", "restart"])
def test_an_unknown_id_is_exit_1_with_a_clear_message(served: ServedControl, command: str) -> None:
    result = run_ctl("--control", str(served.path), command, "flw_missing", "--json")
    assert result.returncode == 1
    assert "not found" in one_line(result.stderr)
    assert "flw_missing" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["reboot"],
        ["inspect"],
        ["ps", "--state", "BOGUS"],
        ["top", "--json"],
        ["--timeout", "0"],
        ["--timeout", "abc", "status"],
        ["top", "--interval", "nan"],
    ],
    ids=lambda argv: " ".join(argv) or "no command",
)
def test_bad_usage_is_exit_2_in_one_line(tmp_path: Path, argv: list[str]) -> None:
    result = run_ctl("--control", str(tmp_path / "x.sock"), *argv)
    assert result.returncode == 2
    assert one_line(result.stderr).startswith("payflowctl")
    assert "_positive" not in result.stderr  # the message speaks of the value, not our code
    assert result.stdout == ""


def test_the_socket_path_comes_from_payflowd_control(served: ServedControl) -> None:
    result = run_ctl("status", "--json", env={"PAYFLOWD_CONTROL": str(served.path)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == STATUS


@pytest.mark.parametrize(
    "command",
    [[str(VENV_BIN / "payflowctl")], [sys.executable, str(REPO / "bin" / "payflowctl")]],
    ids=["console script", "bin"],
)
def test_installed_and_checkout_executables_work(served: ServedControl, command: list[str]) -> None:
    result = subprocess.run(
        [*command, "--control", str(served.path), "ps", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == FLOWS
