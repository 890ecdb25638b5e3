"""The control socket's wire protocol, sans I/O: JSON lines in, JSON lines out.

A request is one line `{"cmd": "status", "args": {...}}`; its answer is one line, either
`{"ok": true, "result": ...}` or `{"ok": false, "error": {"code": "not_found", "message": "..."}}`.
Error codes are those of `runtime.errors`, so a client maps them back without a table of its own.
A bad line gets an error answer and the connection stays usable, like the websocket bridge.

`COMMANDS` is the whole command set as data: each command's `ControlApi` method and arguments.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from runtime.errors import BadFrame, InvalidField, UnknownType

JsonObject = dict[str, Any]

# A request is a command name and an id; anything near this size is not one.
MAX_REQUEST_BYTES = 64 * 1024
# `ps` on a busy daemon is a long line; the reader must not refuse it.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class ControlApi(Protocol):
    """What the daemon's application layer answers; every method may also be `async`.

    Unknown ids raise `runtime.errors.NotFound`.
    """

    def status(self) -> JsonObject | Awaitable[JsonObject]:
        """`uptime_s`, `flows` {state: count}, `actors`, `sockets`, `errors_per_min`."""
        ...

    def tree(self) -> JsonObject | Awaitable[JsonObject]:
        """The supervision tree's root: `name`, `kind`, `state`, `restarts`, `children`."""
        ...

    def ps(self, state: str | None) -> list[JsonObject] | Awaitable[list[JsonObject]]:
        """Flows: `flow_id`, `booking_id`, `pre_id`, `state`, `version`, `updated_at`."""
        ...

    def inspect(self, id: str) -> JsonObject | Awaitable[JsonObject]:
        """One flow by any of its ids: the `ps` keys plus `history`, `tracker`, `sessions`."""
        ...

    def history(self, id: str) -> list[JsonObject] | Awaitable[list[JsonObject]]:
        """One flow's changes, oldest first: `version`, `event`, `state`, `at`."""
        ...

    def sockets(self) -> list[JsonObject] | Awaitable[list[JsonObject]]:
        """Client sessions and feeds: `kind`, `url`, `state`, `reconnects`, `flows`."""
        ...

    def restart(self, id: str) -> JsonObject | Awaitable[JsonObject]:
        """Restart one actor (by name) or one flow's actors (by any of its ids)."""
        ...

    def drain(self) -> JsonObject | Awaitable[JsonObject]:
        """Stop taking new flows; in-flight ones carry on."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSpec:
    """A control command: the `ControlApi` method it calls and the string arguments it takes."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    def arguments(self, args: Mapping[str, Any]) -> dict[str, str | None]:
        """`args` checked against this spec, with absent optional arguments as None."""
        unknown = set(args) - set(self.required) - set(self.optional)
        if unknown:
            raise InvalidField(f"unknown argument {sorted(unknown)[0]!r}")
        checked: dict[str, str | None] = {}
        for name in (*self.required, *self.optional):
            value = args.get(name)
            if value is None and name in self.required:
                raise InvalidField(f"missing argument {name!r}")
            if value is not None and not isinstance(value, str):
                raise InvalidField(f"argument {name!r} must be a string")
            checked[name] = value
        return checked


COMMANDS: Mapping[str, CommandSpec] = MappingProxyType(
    {
        "status": CommandSpec(),
        "tree": CommandSpec(),
        "ps": CommandSpec(optional=("state",)),
        "inspect": CommandSpec(required=("id",)),
        "history": CommandSpec(required=("id",)),
        "sockets": CommandSpec(),
        "restart": CommandSpec(required=("id",)),
        "drain": CommandSpec(),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    cmd: str
    args: dict[str, str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    ok: bool
    result: Any = None
    code: str | None = None
    message: str | None = None


def _loads_object(line: bytes, what: str) -> JsonObject:
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadFrame(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise BadFrame(f"{what} is not a JSON object")
    return value


def encode_request(cmd: str, args: Mapping[str, Any] | None = None) -> bytes:
    return _dumps({"cmd": cmd, "args": dict(args or {})})


def decode_request(line: bytes) -> Request:
    """Parse and validate one request line; raises `BadFrame`, `UnknownType`, `InvalidField`."""
    frame = _loads_object(line, "request")
    cmd, args = frame.get("cmd"), frame.get("args", {})
    if not isinstance(cmd, str):
        raise BadFrame("request needs a string 'cmd'")
    spec = COMMANDS.get(cmd)
    if spec is None:
        raise UnknownType(f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}")
    if not isinstance(args, dict):
        raise BadFrame("'args' must be an object")
    return Request(cmd=cmd, args=spec.arguments(args))


def encode_result(result: Any) -> bytes:
    return _dumps({"ok": True, "result": result})


def encode_error(code: str, message: str) -> bytes:
    return _dumps({"ok": False, "error": {"code": code, "message": message}})


def decode_response(line: bytes) -> Response:
    """Parse one response line; raises `BadFrame` when it is not a response."""
    frame = _loads_object(line, "response")
    if frame.get("ok") is True:
        return Response(ok=True, result=frame.get("result"))
    error = frame.get("error")
    if frame.get("ok") is not False or not isinstance(error, dict):
        raise BadFrame("response has neither a result nor an error")
    return Response(ok=False, code=str(error.get("code")), message=str(error.get("message")))


def _dumps(value: Any) -> bytes:
    # default=str: timestamps or enums an implementation hands back still reach the operator.
    return json.dumps(value, default=str, separators=(",", ":")).encode() + b"\n"
