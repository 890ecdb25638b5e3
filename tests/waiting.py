"""Waiting in tests: poll a condition until it holds, bounded by a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

WAIT_S = 10.0
"""Seconds any condition is given before the test fails."""


def wait_until(condition: Callable[[], T], what: str = "", timeout: float = WAIT_S) -> T:
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.01)  # polling a condition, bounded by the deadline
