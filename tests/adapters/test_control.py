"""The control socket over a real unix socket: permissions, stale files, the JSON-lines protocol."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.control_protocol import MAX_REQUEST_BYTES, ControlApi
from adapters.control_server import ControlServer
from runtime.errors import ConfigError, NotFound

FLOWS: list[dict[str, Any]] = [
    {
        "flow_id": "flw_alpha",
        "booking_id": "bk_100",
        "pre_id": "pre_100",
        "state": "COMPLETED",
        "version": 6,
        "updated_at": 1_700_000_300.0,
    },
    {
        "flow_id": "flw_beta",
        "booking_id": None,
        "pre_id": "pre_200",
        "state": "PAYMENT_PENDING",
        "version": 2,
        "updated_at": 1_700_000_100.0,
    },
]
HISTORY: dict[str, list[dict[str, Any]]] = {
    "flw_alpha": [
        {"version": 1, "event": "flow_created", "state": "PRE_BOOKING", "at": 1_700_000_000.0},
        {
            "version": 2,
            "event": "booking_attached",
            "state": "PAYMENT_PENDING",
            "at": 1_700_000_010.0,
        },
        {"version": 6, "event": "payment_succeeded", "state": "COMPLETED", "at": 1_700_000_300.0},
    ],
    "flw_beta": [
        {"version": 1, "event": "flow_created", "state": "PRE_BOOKING", "at": 1_700_000_050.0},
        {
            "version": 2,
            "event": "booking_attached",
            "state": "PAYMENT_PENDING",
            "at": 1_700_000_100.0,
        },
    ],
}
STATUS: dict[str, Any] = {
    "uptime_s": 3723.5,
    "flows": {"COMPLETED": 1, "PAYMENT_PENDING": 1},
    "actors": 5,
    "sockets": 2,
    "errors_per_min": 0.0,
}
TREE: dict[str, Any] = {
    "name": "root",
    "kind": "supervisor",
    "state": "running",
    "restarts": 0,
    "children": [
        {
            "name": "socket_manager",
            "kind": "actor",
            "state": "running",
            "restarts": 1,
            "children": [],
        },
        {
            "name": "flows",
            "kind": "supervisor",
            "state": "running",
            "restarts": 0,
            "children": [
                {
                    "name": "flow:flw_alpha",
                    "kind": "actor",
                    "state": "running",
                    "restarts": 0,
                    "children": [],
                },
            ],
        },
    ],
}
SOCKETS: list[dict[str, Any]] = [
    {"kind": "client", "url": None, "state": "open", "reconnects": 0, "flows": 1},
    {
        "kind": "feed",
        "url": "ws://127.0.0.1:9999/feed",
        "state": "connecting",
        "reconnects": 3,
        "flows": 0,
    },
]


class FixedApi:
    """A `ControlApi` with fixed data, mixing plain and async methods as the daemon's may."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _flow(self, id: str) -> dict[str, Any]:
        for flow in FLOWS:
            if id in (flow["flow_id"], flow["booking_id"], flow["pre_id"]):
                return flow
        raise NotFound(f"no flow with id {id!r}")

    def status(self) -> dict[str, Any]:
        self.calls.append("status")
        return STATUS

    async def tree(self) -> dict[str, Any]:
        return TREE

    def ps(self, state: str | None) -> list[dict[str, Any]]:
        self.calls.append("ps")
        return [flow for flow in FLOWS if state in (None, flow["state"])]

    async def inspect(self, id: str) -> dict[str, Any]:
        flow = self._flow(id)
        tracker = {"intent_id": "pi_1", "provider_status": "succeeded", "polling": False}
        return {**flow, "history": HISTORY[flow["flow_id"]], "tracker": tracker, "sessions": 1}

    def history(self, id: str) -> list[dict[str, Any]]:
        return HISTORY[self._flow(id)["flow_id"]]

    def sockets(self) -> list[dict[str, Any]]:
        return SOCKETS

    def restart(self, id: str) -> dict[str, Any]:
        return {"restarted": self._flow(id)["flow_id"]}

    async def drain(self) -> dict[str, Any]:
        return {"draining": True, "in_flight": 1}


class ServedControl:
    """A `ControlServer` on its own loop in a thread, as the daemon runs it beside the actors."""

    def __init__(self, path: Path, api: ControlApi) -> None:
        self.path = path
        self.server = ControlServer(path, api)
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:  # noqa: BLE001  (handed to the test thread, which raises it)
            self._error = exc
            self._loop.close()
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()

    def __enter__(self) -> ServedControl:
        self._thread.start()
        assert self._started.wait(10), "control server did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._loop.is_closed():
            self._loop.close()


class LineClient:
    """Raw protocol access: write lines, read lines."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")

    def send(self, raw: bytes) -> dict[str, Any]:
        self.sock.sendall(raw)
        return dict(json.loads(self.reader.readline()))

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        return self.send(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedControl]:
    with ServedControl(tmp_path / "payflowd.sock", FixedApi()) as control:
        yield control


@pytest.fixture
def client(served: ServedControl) -> Iterator[LineClient]:
    line_client = LineClient(served.path)
    yield line_client
    line_client.close()


def test_the_socket_is_mode_0600(served: ServedControl) -> None:
    mode = os.stat(served.path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_the_socket_is_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        with ServedControl(tmp_path / "open.sock", FixedApi()) as control:
            assert stat.S_IMODE(os.stat(control.path).st_mode) == 0o600
    finally:
        os.umask(previous)


def test_every_command_answers_with_its_result(client: LineClient) -> None:
    assert client.call("status") == {"ok": True, "result": STATUS}
    assert client.call("tree")["result"] == TREE
    assert client.call("ps")["result"] == FLOWS
    assert client.call("ps", state="COMPLETED")["result"] == [FLOWS[0]]
    assert client.call("inspect", id="bk_100")["result"]["flow_id"] == "flw_alpha"
    assert client.call("history", id="pre_200")["result"] == HISTORY["flw_beta"]
    assert client.call("sockets")["result"] == SOCKETS
    assert client.call("restart", id="flw_beta")["result"] == {"restarted": "flw_beta"}
    assert client.call("drain")["result"] == {"draining": True, "in_flight": 1}


def test_an_unknown_id_is_not_found(client: LineClient) -> None:
    answer = client.call("inspect", id="flw_nope")
    assert answer["ok"] is False
    assert answer["error"]["code"] == "not_found"
    assert "flw_nope" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"{not json\n", "bad_frame"),
        (b"[1, 2]\n", "bad_frame"),
        (b'{"args": {}}\n', "bad_frame"),
        (b'{"cmd": "status", "args": [1]}\n', "bad_frame"),
        (b'{"cmd": "reboot"}\n', "unknown_type"),
        (b'{"cmd": "inspect", "args": {}}\n', "invalid_field"),
        (b'{"cmd": "inspect", "args": {"id": 7}}\n', "invalid_field"),
        (b'{"cmd": "status", "args": {"verbose": "yes"}}\n', "invalid_field"),
        (b"\xff\xfe\n", "bad_frame"),
    ],
)
def test_a_bad_request_gets_an_error_and_the_connection_stays_usable(
    client: LineClient, line: bytes, code: str
) -> None:
    answer = client.send(line)
    assert answer["ok"] is False
    assert answer["error"]["code"] == code
    assert client.call("status")["ok"] is True


def test_an_oversized_request_is_refused_and_the_connection_closed(client: LineClient) -> None:
    answer = client.send(b"x" * (MAX_REQUEST_BYTES + 10) + b"\n")
    assert answer["error"]["code"] == "bad_frame"
    assert client.reader.readline() == b""


def test_blank_lines_are_ignored(client: LineClient) -> None:
    assert client.send(b"\n  \n" + b'{"cmd": "drain"}\n')["result"]["draining"] is True


class BrokenApi(FixedApi):
    def sockets(self) -> list[dict[str, Any]]:
        raise RuntimeError("bug behind sockets")


def test_a_failing_command_is_internal_logged_and_the_session_survives(tmp_path: Path) -> None:
    with (
        ServedControl(tmp_path / "b.sock", BrokenApi()) as control,
        capture_logs() as logs,
    ):
        line_client = LineClient(control.path)
        answer = line_client.call("sockets")
        assert line_client.call("status")["ok"] is True
        line_client.close()
    assert answer["error"]["code"] == "internal"
    assert "bug behind" not in answer["error"]["message"]
    assert any(entry["event"] == "control_command_failed" for entry in logs)


class BlockingApi(FixedApi):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def status(self) -> dict[str, Any]:
        self.release.wait(10)
        return STATUS


def test_a_plain_method_that_blocks_does_not_stall_other_clients(tmp_path: Path) -> None:
    api = BlockingApi()
    with ServedControl(tmp_path / "k.sock", api) as control:
        slow, fast = LineClient(control.path), LineClient(control.path)
        slow.sock.sendall(b'{"cmd": "status"}\n')
        assert fast.call("tree")["result"] == TREE  # answered while status is still waiting
        api.release.set()
        assert json.loads(slow.reader.readline())["result"] == STATUS
        slow.close()
        fast.close()


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays; nothing listens on it any more
    with ServedControl(path, FixedApi()):
        line_client = LineClient(path)
        assert line_client.call("status")["ok"] is True
        line_client.close()


def test_a_live_socket_is_not_taken_over(served: ServedControl) -> None:
    with (
        pytest.raises(ConfigError, match="already listening"),
        ServedControl(served.path, FixedApi()),
    ):
        pass
    newcomer = LineClient(served.path)  # the file still leads to the first server
    assert newcomer.call("status")["result"] == STATUS
    newcomer.close()


def test_a_file_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(ConfigError, match="not a socket"), ServedControl(path, FixedApi()):
        pass
    assert path.read_text() == "keep me"


def test_stop_removes_the_socket_file(tmp_path: Path) -> None:
    control = ServedControl(tmp_path / "gone.sock", FixedApi())
    with control:
        assert control.path.exists()
        assert control.server.accepting
    assert not control.path.exists()
    assert not control.server.accepting
