"""The socket manager actor: one encode per status, fan-out to the room, presence to the flow."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from actors.messages import ClientPresence
from actors.socket_manager import SocketManager, SocketManagerActor
from runtime.system import ActorSystem
from tests.waiting import wait_until


class RecordingSession:
    """A client connection as the manager sees it: an id and a thread-safe `send`."""

    def __init__(self, session_id: str) -> None:
        self._id = session_id
        self.frames: list[bytes] = []
        self.lock = threading.Lock()

    @property
    def id(self) -> str:
        return self._id

    def send(self, frame: bytes) -> bool:
        with self.lock:
            self.frames.append(frame)
        return True


class Harness:
    def __init__(self, system: ActorSystem) -> None:
        self.encoded: list[int] = []
        self.told: list[tuple[str, object]] = []
        self.manager = SocketManager(
            system.spawn(SocketManagerActor, encode=self.encode, tell_flow=self.tell_flow)
        )

    def encode(self, view: Mapping[str, Any]) -> bytes:
        self.encoded.append(view["version"])
        return f"{view['flow_id']}@{view['version']}".encode()

    def tell_flow(self, flow_id: str, message: object) -> None:
        self.told.append((flow_id, message))

    def join(self, session: RecordingSession, flow_id: str, up_to: int) -> None:
        self.manager.begin_join(session, flow_id).get(timeout=5)
        self.manager.finish_join(session.id, flow_id, up_to)


@pytest.fixture
def harness() -> Iterator[Harness]:
    with ActorSystem() as system:
        yield Harness(system)


def test_a_status_is_encoded_once_and_reaches_every_session_in_the_room(harness: Harness) -> None:
    a, b, other = RecordingSession("a"), RecordingSession("b"), RecordingSession("c")
    harness.join(a, "f1", 1)
    harness.join(b, "f1", 1)
    harness.join(other, "f2", 1)
    harness.manager.publish("f1", {"flow_id": "f1", "version": 2})
    wait_until(lambda: len(a.frames) == 1 and len(b.frames) == 1, "fan-out")
    assert a.frames == b.frames == [b"f1@2"]
    assert harness.encoded == [2]
    assert other.frames == []


def test_presence_is_told_on_first_join_and_last_leave_only(harness: Harness) -> None:
    a, b = RecordingSession("a"), RecordingSession("b")
    harness.join(a, "f", 1)
    harness.join(b, "f", 1)
    harness.manager.leave("a", "f")
    harness.manager.closed("b")
    wait_until(lambda: len(harness.told) == 2, "presence changes")
    assert harness.told == [
        ("f", ClientPresence(attached=True)),
        ("f", ClientPresence(attached=False)),
    ]
    assert harness.manager.room_size("f") == 0


def test_a_closed_session_gets_nothing_more_and_is_not_listed(harness: Harness) -> None:
    a = RecordingSession("a")
    harness.manager.opened(a, "127.0.0.1:5000")
    harness.join(a, "f", 1)
    assert [(s.session_id, s.flows) for s in harness.manager.sessions()] == [("a", 1)]
    harness.manager.closed("a")
    harness.manager.publish("f", {"flow_id": "f", "version": 2})
    assert harness.manager.sessions() == []
    assert a.frames == []


def test_statuses_published_while_joining_arrive_after_the_catch_up(harness: Harness) -> None:
    a = RecordingSession("a")
    harness.manager.begin_join(a, "f").get(timeout=5)
    harness.manager.publish("f", {"flow_id": "f", "version": 3})
    harness.manager.publish("f", {"flow_id": "f", "version": 4})
    assert harness.manager.room_size("f") == 1  # the publishes above are processed by now
    assert a.frames == []
    harness.manager.finish_join("a", "f", 3)
    wait_until(lambda: a.frames == [b"f@4"], "the buffered status newer than the catch-up")


def test_a_burst_beyond_the_mailbox_bound_is_delivered_not_refused() -> None:
    """Publishing follows a durable event: refusing it would fail the flow that persisted it."""
    with ActorSystem(mailbox_size=10) as system:
        harness = Harness(system)
        session = RecordingSession("a")
        harness.join(session, "f", 0)
        for version in range(1, 201):  # from this thread, far faster than one dispatcher drains
            harness.manager.publish("f", {"flow_id": "f", "version": version})
        harness.manager.closed("a")
        wait_until(lambda: len(session.frames) == 200, "every status delivered")
        assert session.frames[-1] == b"f@200"
        assert harness.manager.sessions() == []
