"""Failpoints: named places in the code where a test can make the process fail on purpose.

Armed from the environment, `PAYFLOWD_FAILPOINTS="name=action[,name=action...]"`, read once on
the first `hit`; or in-process with `arm`/`disarm`. Actions:

- `kill`: SIGKILL this process right there (no cleanup, no flush: a power cut, as far as the
  process can tell), to prove that what was persisted before the point is enough to recover;
- `raise`: raise `Internal`, to exercise the supervisor's restart path.

An unarmed failpoint costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

from runtime.errors import ConfigError, Internal

ENV_VAR = "PAYFLOWD_FAILPOINTS"
ACTIONS = frozenset({"kill", "raise"})

_lock = threading.Lock()
_armed: dict[str, str] | None = None


def parse(spec: str) -> dict[str, str]:
    """`"a=kill,b=raise"` -> {"a": "kill", "b": "raise"}; `ConfigError` for anything else."""
    armed: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, action = item.partition("=")
        if not sep or not name or action not in ACTIONS:
            raise ConfigError(f"{ENV_VAR}: expected name=kill|raise, got {item!r}")
        armed[name] = action
    return armed


def _registry() -> dict[str, str]:
    global _armed  # noqa: PLW0603 (one process-wide registry, loaded once)
    with _lock:
        if _armed is None:
            _armed = parse(os.environ.get(ENV_VAR, ""))
        return _armed


def arm(name: str, action: str) -> None:
    """Arm `name` in this process (tests); `action` as in the environment variable."""
    parse(f"{name}={action}")  # validates
    _registry()[name] = action


def disarm(name: str | None = None) -> None:
    """Disarm `name`, or every failpoint."""
    registry = _registry()
    if name is None:
        registry.clear()
    else:
        registry.pop(name, None)


def hit(name: str) -> None:
    """The code reached failpoint `name`: do what it is armed with, if anything."""
    action = _registry().get(name)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "raise":
        raise Internal(f"failpoint {name} raised")
