"""create_flow without journal reads on the common path: the create is tried first, and only a
refused one reads (a repeated idempotency key returns its flow, a taken pre_id is `conflict`).
Checked as a client and an operator see it: replies, tokens that work, joined connections, and
no flow actor left over (`payflowctl tree`, `status`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from adapters.client import PayflowClient
from runtime.errors import AliasConflict, Overloaded
from tests.adapters.test_app import Stack, run
from tests.adapters.test_feeds import until


def flow_actors(s: Stack) -> list[str]:
    """The live flow actors, as `payflowctl tree` lists them and as the registry knows them."""
    node = next(child for child in s.ops.tree()["children"] if child["name"] == "flow")
    in_tree = sorted(child["name"] for child in node["children"])
    return in_tree if in_tree == sorted(s.domain.flows.live_ids()) else ["(tree != registry)"]


async def only_actors_of(s: Stack, *flow_ids: str) -> None:
    # A refused create's actor leaves on its own right after answering: wait for that.
    await until(lambda: flow_actors(s) == sorted(flow_ids), f"only the actors of {flow_ids}")


def ids(created: dict[str, Any]) -> tuple[Any, ...]:
    return created["flow_id"], created["token"], created["state"], created["version"]


def test_a_repeated_idempotency_key_returns_the_same_flow_and_token_and_no_new_actor(
    tmp_path: Path,
) -> None:
    async def body(s: Stack) -> None:
        async with PayflowClient(s.url) as first_client, PayflowClient(s.url) as retrying:
            create: dict[str, Any] = {"amount": 10, "currency": "eur", "idempotency_key": "idem-1"}
            first = await first_client.create_flow(pre_id="pre_i", **create)
            flow_id = first["flow_id"]
            await only_actors_of(s, flow_id)
            actors = (await asyncio.to_thread(s.ops.status))["actors"]
            again = await retrying.create_flow(pre_id="pre_i", **create)
            without_pre_id = await retrying.create_flow(**create)
            assert ids(again) == ids(without_pre_id) == ids(first)
            await only_actors_of(s, flow_id)
            assert (await asyncio.to_thread(s.ops.status))["actors"] == actors
            # The retrying connection was joined to the flow, as the first one was.
            assert (await asyncio.to_thread(s.ops.inspect, flow_id))["sessions"] == 2
            ack = await retrying.attach_booking(flow_id, again["token"], "bk_i")
            assert ack["version"] == 2
        rows = await asyncio.to_thread(s.ops.ps, None)
        assert [row["flow_id"] for row in rows] == [flow_id]
        assert s.metrics.errors_per_minute() == 0  # a repeated create is not an error

    run(tmp_path, body)


def test_a_taken_pre_id_without_the_key_is_a_conflict_that_leaves_nothing(
    tmp_path: Path,
) -> None:
    async def body(s: Stack) -> None:
        async with PayflowClient(s.url) as client:
            first = await client.create_flow(amount=10, currency="eur", pre_id="pre_t")
            with pytest.raises(AliasConflict):
                await client.create_flow(amount=10, currency="eur", pre_id="pre_t")
            with pytest.raises(AliasConflict):  # a key of its own does not make it the same
                await client.create_flow(
                    amount=10, currency="eur", pre_id="pre_t", idempotency_key="idem-t"
                )
            await only_actors_of(s, first["flow_id"])
            # The refused create bound nothing: its key makes a new flow now.
            other = await client.create_flow(amount=10, currency="eur", idempotency_key="idem-t")
            assert other["flow_id"] != first["flow_id"]
            assert (other["state"], other["version"]) == ("PRE_BOOKING", 1)
            await only_actors_of(s, first["flow_id"], other["flow_id"])
        rows = await asyncio.to_thread(s.ops.ps, None)
        assert sorted(row["flow_id"] for row in rows) == sorted(
            [first["flow_id"], other["flow_id"]]
        )
        assert s.metrics.errors_per_minute() == 2

    run(tmp_path, body)


def test_while_draining_a_repeated_create_gets_its_flow_and_a_new_one_is_refused(
    tmp_path: Path,
) -> None:
    async def body(s: Stack) -> None:
        async with PayflowClient(s.url) as client:
            first = await client.create_flow(amount=10, currency="eur", idempotency_key="idem-d")
            s.app.start_draining()
            again = await client.create_flow(amount=10, currency="eur", idempotency_key="idem-d")
            assert ids(again) == ids(first)
            with pytest.raises(Overloaded):
                await client.create_flow(amount=10, currency="eur", idempotency_key="idem-new")
            await only_actors_of(s, first["flow_id"])

    run(tmp_path, body)


def test_a_restarted_flow_actor_loads_what_its_first_incarnation_stored(tmp_path: Path) -> None:
    async def body(s: Stack) -> None:
        async with PayflowClient(s.url) as client:
            created = await client.create_flow(amount=10, currency="eur")
            flow_id, token = created["flow_id"], created["token"]
            await client.attach_booking(flow_id, token, "bk_r")
            restarted = await asyncio.to_thread(s.ops.restart, flow_id)
            assert restarted["restarted"] == [flow_id]
            # Started without a load (its id was new); the restart must read version 2 back.
            ack = await client.select_method(flow_id, token, "pm_card_visa", expect_version=2)
            assert ack["version"] == 3

    run(tmp_path, body)
