"""Shared fixtures. localstripe: one real process per test session, emptied before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.localstripe import LocalStripe, localstripe_binary


@pytest.fixture(scope="session")
def localstripe_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    """A real localstripe process for this session (never shared with another session)."""
    server = LocalStripe.start(localstripe_binary(), tmp_path_factory.mktemp("localstripe"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def localstripe(localstripe_server: LocalStripe) -> LocalStripe:
    """The session's localstripe, emptied (objects and webhooks) for this test."""
    localstripe_server.reset()
    return localstripe_server
