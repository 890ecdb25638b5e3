"""payflowctl: look into a running payflowd through its control socket.

Exit status tells a script what happened without parsing text:

| status | meaning |
|---|---|
| 0 | answered |
| 1 | the daemon answered with an error (an unknown id, a failed action) |
| 2 | bad usage (also `top --json`) |
| 3 | the daemon is unreachable: no socket file, connection refused, no answer in time |

`--json` prints exactly one JSON document on stdout, keys sorted, so output is stable across
daemon versions that build their answers in another order. Every message goes to stderr as one line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from itertools import count
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, NoReturn, TextIO

from rich.live import Live

from actors.flow_states import FlowState
from adapters.control_protocol import MAX_RESPONSE_BYTES, decode_response, encode_request
from adapters.ctl_render import RENDERERS, make_console, render_top
from runtime.errors import (
    BadFrame,
    Conflict,
    Forbidden,
    Internal,
    InvalidField,
    InvalidTransition,
    NotFound,
    Overloaded,
    PayflowError,
    Retryable,
    UnknownType,
)

ENV_CONTROL = "PAYFLOWD_CONTROL"
DEFAULT_CONTROL = "payflowd.sock"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

# The daemon answers with runtime.errors codes; the same classes come back out here.
_REMOTE_ERRORS: Mapping[str, type[PayflowError]] = MappingProxyType(
    {
        cls.code: cls
        for cls in (
            *(BadFrame, UnknownType, InvalidField, NotFound, Forbidden, InvalidTransition),
            *(Conflict, Overloaded, Internal),
        )
    }
)
# First match wins; anything else the daemon refused is exit 1.
_EXIT_CODES: tuple[tuple[type[PayflowError], int], ...] = (
    (Retryable, EXIT_UNREACHABLE),
    (BadFrame, EXIT_USAGE),
    (UnknownType, EXIT_USAGE),
    (InvalidField, EXIT_USAGE),
)


def exit_code_for(exc: PayflowError) -> int:
    return next((code for cls, code in _EXIT_CODES if isinstance(exc, cls)), EXIT_ERROR)


class ControlClient:
    """A blocking client of the control socket: one request line, one response line.

    Raises `runtime.errors.Retryable` when the daemon cannot be reached or stops answering, and
    the `runtime.errors` class of the daemon's error code when it refuses a request.
    """

    def __init__(self, path: Path | str, *, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self, cmd: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send one command and return its result."""
        try:
            sock = self._connected()
            sock.sendall(encode_request(cmd, args))
            line = self._read_line(sock)
        except FileNotFoundError:
            raise self._unreachable("no socket file there (is payflowd running?)") from None
        except ConnectionRefusedError:
            raise self._unreachable("connection refused (is payflowd running?)") from None
        except PermissionError:
            raise self._unreachable("permission denied (run as the daemon's user)") from None
        except TimeoutError:
            raise self._unreachable(f"no answer within {self._timeout:g} s") from None
        except OSError as exc:
            raise self._unreachable(exc.strerror or type(exc).__name__) from None
        try:
            response = decode_response(line)
        except BadFrame:
            raise Internal(
                f"{self.path} answered something that is not a control response"
            ) from None
        if response.ok:
            return response.result
        error = _REMOTE_ERRORS.get(response.code or "", Internal)
        raise error(response.message or "the daemon refused the request")

    def _unreachable(self, reason: str) -> Retryable:
        self.close()
        return Retryable(f"cannot reach payflowd at {self.path}: {reason}")

    def _connected(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(str(self.path))
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def _read_line(self, sock: socket.socket) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_RESPONSE_BYTES:
                raise Internal("the daemon's answer is too long")
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError(0, "the daemon closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


# --- command line ----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line (the contract), not usage text plus a line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan  # argparse's own message would name this function
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


# Every command in help order, with its help line; the ones taking an ID are listed below.
_COMMANDS: Mapping[str, str] = MappingProxyType(
    {
        "status": "uptime, flows by state, actors, sockets, errors per minute",
        "tree": "the supervision tree",
        "ps": "flows, optionally only those in one state",
        "inspect": "one flow by flow_id, booking_id or pre_id, with its history",
        "history": "a flow's changes, oldest first",
        "sockets": "client sessions and upstream feeds",
        "top": "live view of status and the latest flows (Ctrl-C ends it)",
        "restart": "restart an actor (by name) or a flow's actors (by any of its ids)",
        "drain": "stop taking new flows; running ones carry on",
    }
)
_ID_COMMANDS = frozenset({"inspect", "history", "restart"})


def _add_command_arguments(name: str, command: argparse.ArgumentParser) -> None:
    if name in _ID_COMMANDS:
        command.add_argument("id", metavar="ID")
    elif name == "ps":
        states = [str(state) for state in FlowState]
        command.add_argument("--state", type=str.upper, choices=states, metavar="STATE")
    elif name == "top":
        command.add_argument("--interval", type=_positive, default=1.0, metavar="SECONDS")
        command.add_argument("--count", type=int, metavar="N", help="stop after N views")
        command.add_argument("--limit", type=int, default=20, metavar="N", help="flows shown")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="payflowctl", description="Inspect a running payflowd.")
    default_control = os.environ.get(ENV_CONTROL) or DEFAULT_CONTROL
    parser.add_argument(
        "--control",
        metavar="PATH",
        default=default_control,
        help=f"the daemon's control socket [{ENV_CONTROL}, default {DEFAULT_CONTROL}]",
    )
    parser.add_argument("--timeout", type=_positive, default=10.0, metavar="SECONDS")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    # SUPPRESS: a subcommand without --json must not undo a --json given before it.
    flag = _Parser(add_help=False)
    flag.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in _COMMANDS.items():
        _add_command_arguments(name, commands.add_parser(name, parents=[flag], help=text))
    return parser


def _request_args(ns: argparse.Namespace) -> dict[str, Any]:
    if ns.command == "ps":
        return {"state": ns.state} if ns.state else {}
    return {"id": ns.id} if ns.command in _ID_COMMANDS else {}


def _print_json(result: Any, stream: TextIO) -> None:
    stream.write(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")


def _run_once(client: ControlClient, ns: argparse.Namespace) -> int:
    result = client.call(ns.command, _request_args(ns))
    if ns.json:
        _print_json(result, sys.stdout)
    else:
        make_console(sys.stdout).print(RENDERERS[ns.command](result))
    return EXIT_OK


def _views(limit: int | None) -> Iterator[int]:
    return iter(range(limit)) if limit is not None else count()


def _run_top(client: ControlClient, ns: argparse.Namespace) -> int:
    """Refresh in place until Ctrl-C (exit 0), `--count` views, or the daemon goes away."""
    console = make_console(sys.stdout)
    try:
        with Live(console=console, auto_refresh=False) as live:
            for view in _views(ns.count):
                if view:
                    time.sleep(ns.interval)  # the refresh cadence, not a wait for a condition
                screen = render_top(client.call("status"), client.call("ps"), limit=ns.limit)
                live.update(screen, refresh=True)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _fail(exc: PayflowError) -> int:
    prefix = "not found: " if isinstance(exc, NotFound) else ""
    sys.stderr.write(f"payflowctl: {prefix}{exc}\n")
    return exit_code_for(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `payflowctl` console script; returns the exit status."""
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if ns.command == "top" and ns.json:
        sys.stderr.write("payflowctl: top is a live view and has no --json; use status or ps\n")
        return EXIT_USAGE
    with ControlClient(ns.control, timeout=ns.timeout) as client:
        try:
            return _run_top(client, ns) if ns.command == "top" else _run_once(client, ns)
        except PayflowError as exc:
            return _fail(exc)
        except KeyboardInterrupt:
            return 130  # the shell's convention for "ended by SIGINT"


if __name__ == "__main__":
    sys.exit(main())
