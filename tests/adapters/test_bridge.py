"""The websocket bridge as a client sees it: real websockets on 127.0.0.1, the real codec, and a
small in-test application (tests/adapters/bridge_harness.py) standing in for the daemon's."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from websockets.exceptions import ConnectionClosed, InvalidStatus

from adapters.bridge import BridgeLimits
from adapters.codec import MAX_FRAME_BYTES, FrameRejected, decode_request
from adapters.session import Session
from tests.adapters.bridge_harness import (
    WAIT,
    BridgeThread,
    FlowApp,
    RawPeer,
    ask,
    client,
    pack,
    read_until_closed,
    unpack,
)
from tests.waiting import wait_until

ROOMY = BridgeLimits(request_rate=100_000, request_burst=100_000, ping_interval=None)


@pytest.fixture(scope="module")
def shared() -> Iterator[BridgeThread]:
    with BridgeThread(FlowApp(), ROOMY) as running:
        yield running


def create(ws: Any, ref: object = "c") -> dict[str, Any]:
    reply = ask(ws, type="create_flow", ref=ref, amount=1200, currency="eur")
    assert reply["type"] == "created", reply
    assert reply["ref"] == ref
    return reply


# --- bad input: one error frame each, the connection stays usable -------------------------------

BAD_INPUTS: list[tuple[str, bytes | str, str, object]] = [
    ("text message", "hello", "bad_frame", None),
    ("undecodable bytes", b"\xc1\x00", "bad_frame", None),
    ("two values", pack(type="leave", id="x") + b"\x01", "bad_frame", None),
    ("not a map", msgpack.packb([1, 2, 3]), "bad_frame", None),
    ("missing type", pack(ref=7, id="x"), "bad_frame", 7),
    ("type not a string", pack(type=5, ref="r"), "bad_frame", "r"),
    ("unknown type", pack(type="fly", ref=b"\x01"), "unknown_type", b"\x01"),
    (
        "amount not positive",
        pack(type="create_flow", ref=3, amount=0, currency="eur"),
        "invalid_field",
        3,
    ),
    ("missing currency", pack(type="create_flow", ref=4.5, amount=10), "invalid_field", 4.5),
    (
        "bad currency",
        pack(type="create_flow", ref=False, amount=10, currency="EUR"),
        "invalid_field",
        False,
    ),
    ("token not a string", pack(type="join", ref=9, id="x", token=1), "invalid_field", 9),
    ("ref not a scalar", pack(type="leave", ref=[1], id="x"), "invalid_field", None),
    ("unknown flow", pack(type="join", ref="j", id="nope", token="t"), "not_found", "j"),
]


@pytest.mark.parametrize(
    ("message", "code", "ref"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_gets_one_error_frame_and_the_connection_keeps_working(
    shared: BridgeThread, message: bytes | str, code: str, ref: object
) -> None:
    with client(shared.url) as ws:
        ws.send(message)
        error = unpack(ws.recv(timeout=WAIT))
        assert (error["type"], error["code"], error["ref"]) == ("error", code, ref)
        assert isinstance(error["message"], str)
        assert error["message"]
        create(ws, ref="after")


def test_wrong_token_is_forbidden_and_the_message_never_echoes_it(shared: BridgeThread) -> None:
    with client(shared.url) as ws:
        flow_id = create(ws)["flow_id"]
        error = ask(ws, type="submit", ref=1, id=flow_id, token="pft_guess")
        assert (error["code"], error["ref"]) == ("forbidden", 1)
        assert "pft_guess" not in error["message"]
        assert ask(ws, type="leave", ref=2, id=flow_id)["type"] == "ack"


def test_a_handler_bug_answers_internal_logs_the_traceback_and_keeps_the_connection() -> None:
    app = FlowApp()
    with BridgeThread(app, ROOMY) as running, client(running.url) as ws:
        app.fail_with = RuntimeError("journal disk on fire")
        with capture_logs() as logs:
            error = ask(ws, type="create_flow", ref="boom", amount=5, currency="eur")
        assert (error["code"], error["ref"]) == ("internal", "boom")
        assert "fire" not in error["message"]
        failed = [entry for entry in logs if entry["event"] == "request_failed"]
        assert failed
        assert failed[0]["type"] == "create_flow"
        assert failed[0]["exc_info"] is True
        app.fail_with = None
        create(ws)


class _RefusesToOpen(FlowApp):
    async def opened(self, session: Session) -> None:
        await super().opened(session)
        raise RuntimeError("no room for this session")


def test_a_failing_opened_closes_the_session_with_1011_and_still_calls_closed_once() -> None:
    app = _RefusesToOpen()
    with BridgeThread(app, ROOMY) as running, client(running.url) as ws:
        _frames, closed = read_until_closed(ws)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1011
        wait_until(lambda: sum(app.closed_calls.values()) == 1, "closed() to be called")
        assert running.bridge.session_count == 0


def test_the_reply_carries_the_request_ref_even_when_the_handler_sets_none(
    shared: BridgeThread,
) -> None:
    with client(shared.url) as ws:
        created = create(ws, ref=b"raw-ref")
        status = ask(ws, type="join", ref=0, id=created["flow_id"], token=created["token"])
        assert (status["type"], status["ref"], status["version"]) == ("status", 0, 1)


# --- Hypothesis: nothing a client sends crashes the bridge ---------------------------------------

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=20)
)
_KEYS = st.one_of(
    st.sampled_from(["type", "ref", "id", "token", "amount", "since"]), st.text(max_size=8)
)
_MAPS = st.dictionaries(_KEYS, st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3)), max_size=6)
_MESSAGES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=50),
    _MAPS.map(lambda value: msgpack.packb(value, use_bin_type=True)),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["create_flow", "join", "submit", "leave"]), "ref": _SCALARS},
        optional={"amount": _SCALARS, "currency": _SCALARS, "id": _SCALARS, "token": _SCALARS},
    ).map(lambda value: msgpack.packb(value, use_bin_type=True)),
)  # fmt: skip


def _same_wire(left: object, right: object) -> bool:
    same: bool = msgpack.packb(left) == msgpack.packb(right)
    return same


def _expected_error(message: bytes | str) -> tuple[str, object] | None:
    """(code, ref) the codec says this message earns, or None if it is a valid request."""
    try:
        decode_request(message)
    except FrameRejected as error:
        return error.code, error.ref
    return None


def test_random_input_never_crashes_the_bridge_and_gets_exactly_one_reply(
    shared: BridgeThread,
) -> None:
    with client(shared.url) as ws:
        serial = iter(range(10**6))

        @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
        @given(_MESSAGES)
        def one_message(message: bytes | str) -> None:
            ws.send(message)
            reply = unpack(ws.recv(timeout=WAIT))
            expected = _expected_error(message)
            if expected is not None:
                assert reply["type"] == "error"
                assert reply["code"] == expected[0]
                assert _same_wire(reply["ref"], expected[1])  # NaN refs too
            # The very next frame answers the next request: there was no second reply.
            marker = f"sync-{next(serial)}"
            assert ask(ws, type="leave", ref=marker, id="none")["ref"] == marker

        one_message()
        create(ws)


# --- ordering and isolation ----------------------------------------------------------------------


def test_join_sends_missed_statuses_in_order_then_the_current_one_with_the_ref(
    shared: BridgeThread,
) -> None:
    with client(shared.url) as owner:
        created = create(owner)
        flow_id, token = created["flow_id"], created["token"]
        for _ in range(4):
            shared.app.advance(flow_id)  # from this thread, as a flow actor would
        with client(shared.url) as late:
            late.send(pack(type="join", ref="j", id=flow_id, token=token, since=2))
            frames = [unpack(late.recv(timeout=WAIT)) for _ in range(3)]
            assert [(f["version"], f.get("ref")) for f in frames] == [
                (3, None),
                (4, None),
                (5, "j"),
            ]
            shared.app.advance(flow_id)
            assert unpack(late.recv(timeout=WAIT))["version"] == 6
        owner_versions = [unpack(owner.recv(timeout=WAIT))["version"] for _ in range(5)]
        assert owner_versions == [2, 3, 4, 5, 6]


def test_requests_of_one_connection_run_in_order_and_a_slow_one_does_not_stall_others() -> None:
    app = FlowApp()
    with (
        BridgeThread(app, ROOMY) as running,
        client(running.url) as slow,
        client(running.url) as fast,
    ):
        created = create(slow)
        running.on_loop(lambda: setattr(app, "gate", asyncio.Event()))
        slow.send(pack(type="submit", ref="s1", id=created["flow_id"], token=created["token"]))
        slow.send(pack(type="leave", ref="s2", id=created["flow_id"]))
        wait_until(lambda: app.handled.count("submit") == 1, "the slow submit to start")
        create(fast, ref="meanwhile")  # answered while the other connection's submit waits
        with pytest.raises(TimeoutError):
            slow.recv(timeout=0.2)
        assert app.handled.count("leave") == 0  # s2 waits behind s1 on its connection
        gate = app.gate
        assert gate is not None
        running.loop.call_soon_threadsafe(gate.set)
        refs = [unpack(slow.recv(timeout=WAIT)).get("ref") for _ in range(3)]
        assert refs == [None, "s1", "s2"]  # the status the submit caused, its ack, the leave


# --- limits --------------------------------------------------------------------------------------


def test_a_slow_consumer_is_cut_off_while_another_client_gets_every_frame() -> None:
    app = FlowApp()
    limits = BridgeLimits(send_queue_frames=40, write_limit_bytes=4096, ping_interval=None)
    with BridgeThread(app, limits) as running, capture_logs() as logs:
        slow = RawPeer(running.bridge.port, receive_buffer=4096)
        slow.send(pack(type="create_flow", ref=1, amount=10, currency="eur"))
        created = unpack(slow.next_frame())
        flow_id = created["flow_id"]
        slow_session = next(iter(app.sessions.values()))
        with client(running.url) as fast:
            ask(fast, type="join", id=flow_id, token=created["token"])
            received = _push_until_cut_off(app, flow_id, "x" * 2048, fast, slow_session)
            assert received == list(range(2, received[-1] + 1))  # every frame, in order
            assert slow_session.peak_queued <= 40
            assert (slow_session.close_code, slow_session.close_reason) == (1008, "slow consumer")
            # It reads at last: what was already in flight, then the close frame.
            in_flight, close = slow.read_until_close()
            assert (close.code, close.reason) == (1008, "slow consumer")
            assert len(in_flight) < len(received)  # the rest was dropped, not buffered
            wait_until(lambda: app.closed_calls[slow_session.id] == 1, "closed() for the slow one")
            assert ask(fast, type="leave", ref="still", id=flow_id)["ref"] == "still"
        slow.close()
    assert any(entry["event"] == "session_slow_consumer" for entry in logs)


def _push_until_cut_off(
    app: FlowApp, flow_id: str, padding: str, fast: Any, slow: Any
) -> list[int]:
    """Push statuses in small batches, letting the fast client keep up, until the slow one is
    cut off; returns the versions the fast client received."""
    received: list[int] = []
    for _ in range(400):
        for _ in range(10):
            app.advance(flow_id, padding)
        while len(received) < app.flows[flow_id].version - 1:
            received.append(unpack(fast.recv(timeout=WAIT))["version"])
        if not slow.is_open:
            return received
    raise AssertionError("the slow consumer was never cut off")


def test_beyond_max_connections_the_handshake_is_refused_with_503() -> None:
    app = FlowApp()
    with BridgeThread(app, BridgeLimits(max_connections=2, ping_interval=None)) as running:
        with client(running.url) as first, client(running.url):
            with pytest.raises(InvalidStatus) as refused, client(running.url):
                pass
            assert refused.value.response.status_code == 503
            assert refused.value.response.headers["Retry-After"] == "1"
            create(first)  # the admitted ones still work
        wait_until(lambda: running.bridge.session_count == 0, "both sessions to end")
        with client(running.url) as again:
            create(again)
        assert len(app.sessions) == 3  # the refused one never reached the application


def test_over_the_request_rate_a_client_gets_overloaded_not_a_disconnect() -> None:
    limits = BridgeLimits(request_rate=5.0, request_burst=3, ping_interval=None)
    with BridgeThread(FlowApp(), limits) as running, client(running.url) as ws:
        for ref in range(6):
            ws.send(pack(type="leave", ref=ref, id="none"))
        replies = [unpack(ws.recv(timeout=WAIT)) for _ in range(6)]
        assert [r["code"] for r in replies] == ["not_found"] * 3 + ["overloaded"] * 3
        assert [r["ref"] for r in replies] == list(range(6))
        wait_until(lambda: ask(ws, type="leave", id="none")["code"] == "not_found", "a token")


def test_an_oversize_frame_closes_the_connection_with_1009() -> None:
    app = FlowApp()
    with BridgeThread(app, ROOMY) as running, client(running.url) as ws:
        ws.send(b"\x00" * (MAX_FRAME_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=WAIT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
        wait_until(lambda: sum(app.closed_calls.values()) == 1, "closed() to be called")
        assert list(app.closed_calls.values()) == [1]


def test_a_dead_peer_is_closed_by_heartbeat_and_closed_is_called_once() -> None:
    app = FlowApp()
    limits = BridgeLimits(ping_interval=0.1, ping_timeout=0.2, close_timeout=0.3)
    with BridgeThread(app, limits) as running:
        silent = RawPeer(running.bridge.port)  # completes the handshake, then never reads
        wait_until(lambda: len(app.sessions) == 1, "the silent peer's session")
        session = next(iter(app.sessions.values()))
        wait_until(lambda: app.closed_calls[session.id] == 1, "the heartbeat to close it")
        assert (session.close_code, session.close_reason) == (1011, "keepalive ping timeout")
        assert running.bridge.session_count == 0
        assert app.closed_calls[session.id] == 1
        silent.close()


# --- stopping, and what is logged ----------------------------------------------------------------


def test_stop_flushes_queued_frames_closes_with_1001_and_refuses_new_connections() -> None:
    app = FlowApp()
    running = BridgeThread(app, ROOMY)
    with running, client(running.url) as ws:
        assert running.bridge.accepting
        flow_id = create(ws)["flow_id"]
        for _ in range(20):
            app.advance(flow_id)
        stopping = asyncio.run_coroutine_threadsafe(running.bridge.stop(WAIT), running.loop)
        wait_until(lambda: not running.bridge.accepting, "the bridge to stop accepting")
        frames, closed = read_until_closed(ws)
        stopping.result(WAIT)
        assert [unpack(frame)["version"] for frame in frames] == list(range(2, 22))
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1001
        assert list(app.closed_calls.values()) == [1]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", running.bridge.port), timeout=1).close()


def test_sessions_are_logged_opened_and_closed_without_frame_contents() -> None:
    app = FlowApp()
    with capture_logs() as logs, BridgeThread(app, ROOMY) as running:
        with client(running.url) as ws:
            created = create(ws)
            ask(ws, type="join", id=created["flow_id"], token=created["token"])
            ws.close(4000, "bye")
        wait_until(lambda: any(e["event"] == "session_closed" for e in logs), "session_closed")
    by_event = {entry["event"]: entry for entry in logs}
    session_id = next(iter(app.sessions))
    assert by_event["session_opened"]["session_id"] == session_id
    assert by_event["session_opened"]["remote"][0] == "127.0.0.1"
    closed = by_event["session_closed"]
    assert (closed["session_id"], closed["code"], closed["reason"]) == (session_id, 4000, "bye")
    assert created["token"] not in repr(logs)


def test_send_is_safe_from_many_threads_and_keeps_each_threads_order() -> None:
    app = FlowApp()
    with BridgeThread(app, ROOMY) as running, client(running.url) as ws:
        create(ws)
        session = next(iter(app.sessions.values()))

        def push(thread: int) -> None:
            for n in range(100):
                assert session.send(pack(type="status", thread=thread, n=n))

        threads = [threading.Thread(target=push, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        seen: dict[int, list[int]] = {t: [] for t in range(4)}
        for _ in range(400):
            frame = unpack(ws.recv(timeout=WAIT))
            seen[frame["thread"]].append(frame["n"])
        assert all(numbers == list(range(100)) for numbers in seen.values())
        assert session.queued == 0


def _push_from_a_thread(session: Session, frames: list[bytes], *, then_close: bool) -> None:
    def push() -> None:
        for frame in frames:
            assert session.send(frame)
        if then_close:
            session.close()

    pusher = threading.Thread(target=push)
    pusher.start()
    pusher.join(WAIT)


def test_frames_from_another_thread_past_a_full_write_buffer_arrive_complete_and_in_order() -> None:
    # Frames handed over from another thread are written straight from the loop callback while
    # the write buffer has room; the rest wait in the queue. The peer reads nothing until all
    # are sent, so both paths are taken, and their frames must interleave in order.
    app = FlowApp()
    limits = BridgeLimits(write_limit_bytes=4096, send_queue_frames=1_000, ping_interval=None)
    with BridgeThread(app, limits) as running:
        peer = RawPeer(running.bridge.port, receive_buffer=4096)
        wait_until(lambda: len(app.sessions) == 1, "the session")
        session = next(iter(app.sessions.values()))
        sent = 0
        for _ in range(200):  # until the kernel's buffers are full too and frames must wait
            batch = [pack(type="status", n=n, note="x" * 2048) for n in range(sent, sent + 30)]
            _push_from_a_thread(session, batch, then_close=False)
            sent += 30
            if session.queued > 0:
                break
        assert session.queued > 0, "the write buffer never filled"
        _push_from_a_thread(session, [pack(type="status", n=sent)], then_close=True)
        received, close = peer.read_until_close()
        assert [unpack(frame)["n"] for frame in received] == list(range(sent + 1))
        assert close.code == 1000
        assert session.queued == 0


def test_frames_from_another_thread_to_a_reading_client_arrive_and_leave_no_backlog() -> None:
    app = FlowApp()
    with BridgeThread(app, ROOMY) as running, client(running.url) as ws:
        create(ws)
        session = next(iter(app.sessions.values()))
        for n in range(50):
            _push_from_a_thread(session, [pack(type="status", n=n)], then_close=False)
            assert unpack(ws.recv(timeout=WAIT))["n"] == n
        assert session.queued == 0
        assert ask(ws, type="leave", ref="after", id="flow_1")["ref"] == "after"
