"""Rooms: who is joined to which flow, presence changes, and gap-free, duplicate-free fan-out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.socket_core import Presence, Rooms


def test_first_join_and_last_leave_change_presence() -> None:
    rooms: Rooms[str] = Rooms()
    assert rooms.begin_join("s1", "f") == Presence(flow_id="f", attached=True)
    assert rooms.begin_join("s2", "f") is None
    assert rooms.leave("s1", "f") is None
    assert rooms.leave("s2", "f") == Presence(flow_id="f", attached=False)
    assert rooms.members("f") == frozenset()
    assert rooms.leave("s2", "f") is None  # leaving twice changes nothing


def test_a_flow_has_members_from_the_first_join_until_the_last_leave() -> None:
    rooms: Rooms[str] = Rooms()
    assert not rooms.has_members("f")
    rooms.begin_join("s1", "f")
    rooms.begin_join("s2", "f")
    assert rooms.has_members("f")  # a catching-up member counts: it buffers statuses
    rooms.leave("s1", "f")
    assert rooms.has_members("f")
    rooms.leave("s2", "f")
    assert not rooms.has_members("f")
    rooms.begin_join("s3", "f")
    rooms.drop_session("s3")
    assert not rooms.has_members("f")


def test_dropping_a_session_empties_only_the_rooms_it_was_alone_in() -> None:
    rooms: Rooms[str] = Rooms()
    rooms.begin_join("s1", "a")
    rooms.begin_join("s1", "b")
    rooms.begin_join("s2", "b")
    assert rooms.drop_session("s1") == [Presence(flow_id="a", attached=False)]
    assert rooms.members("b") == frozenset({"s2"})
    assert rooms.flows_of("s1") == frozenset()
    assert rooms.room_sizes() == {"b": 1}


def test_statuses_published_during_catch_up_follow_it_without_repeats() -> None:
    rooms: Rooms[str] = Rooms()
    rooms.begin_join("s1", "f")
    assert rooms.deliver("f", 4, "v4") == []  # buffered: the replay reads up to v4 itself
    assert rooms.deliver("f", 5, "v5") == []
    assert rooms.finish_join("s1", "f", up_to=4) == ["v5"]
    assert rooms.deliver("f", 5, "v5 again") == []
    assert rooms.deliver("f", 6, "v6") == ["s1"]


def test_finish_join_after_leave_releases_nothing() -> None:
    rooms: Rooms[str] = Rooms()
    rooms.begin_join("s1", "f")
    rooms.deliver("f", 2, "v2")
    rooms.leave("s1", "f")
    assert rooms.finish_join("s1", "f", up_to=1) == []


def test_a_live_member_is_not_sent_anything_during_another_members_catch_up() -> None:
    rooms: Rooms[str] = Rooms()
    rooms.begin_join("live", "f")
    rooms.finish_join("live", "f", up_to=1)
    rooms.begin_join("late", "f")
    assert rooms.deliver("f", 2, "v2") == ["live"]
    assert rooms.finish_join("late", "f", up_to=1) == ["v2"]


def test_a_status_for_a_flow_nobody_joined_goes_to_nobody() -> None:
    rooms: Rooms[str] = Rooms()
    rooms.begin_join("s1", "other")
    rooms.finish_join("s1", "other", up_to=0)
    assert rooms.deliver("f", 1, "v1") == []
    assert rooms.deliver("other", 1, "o1") == ["s1"]


@given(
    read_up_to=st.integers(min_value=1, max_value=20),
    published=st.lists(st.integers(min_value=1, max_value=30), max_size=40),
    after=st.lists(st.integers(min_value=1, max_value=40), max_size=20),
)
def test_a_joiner_gets_each_version_above_its_replay_once_in_increasing_order(
    read_up_to: int, published: list[int], after: list[int]
) -> None:
    rooms: Rooms[int] = Rooms()
    rooms.begin_join("s", "f")
    got: list[int] = []
    for version in published:
        got += [version for _ in rooms.deliver("f", version, version)]
    got += rooms.finish_join("s", "f", up_to=read_up_to)
    for version in after:
        got += [version for _ in rooms.deliver("f", version, version)]
    assert got == sorted(set(got))
    assert all(version > read_up_to for version in got)
    expected_buffered = {v for v in published if v > read_up_to}
    assert expected_buffered <= set(got)
