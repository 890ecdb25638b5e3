"""The control socket payflowctl talks to: a unix socket, mode 0600, JSON lines.

Only the daemon's own user may connect, so the socket is born 0600: it is bound under a umask of
0o177 (no window where another user could connect) and chmod-ed again in case the umask was not
honoured. A socket file left behind by a crashed daemon is removed at start, but only when nothing
answers on it: asyncio would otherwise unlink a running daemon's socket and steal its operators.

`ControlApi` methods that are plain functions run in a worker thread, because answering may mean
asking actors and waiting (never on the loop); `async` ones run on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import stat
from pathlib import Path
from typing import Any

import structlog

from adapters.control_protocol import (
    MAX_REQUEST_BYTES,
    ControlApi,
    Request,
    decode_request,
    encode_error,
    encode_result,
)
from runtime.errors import ConfigError, PayflowError

SOCKET_MODE = 0o600
_PROBE_TIMEOUT_S = 1.0
_UMASK = 0o177


async def _someone_answers(path: Path) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path)), _PROBE_TIMEOUT_S
        )
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except TimeoutError:
        return True  # a listener too busy to accept is still a listener
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _is_socket_file(path: Path) -> bool:
    """Whether `path` holds a socket file; refuses to go near anything else living there."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"control socket path {path} exists and is not a socket")
    return True


async def clear_stale_socket(path: Path) -> None:
    """Remove a dead daemon's socket file; refuse when the path is live or not a socket."""
    if not _is_socket_file(path):
        return
    if await _someone_answers(path):
        raise ConfigError(f"another daemon is already listening on {path}")
    os.unlink(path)


def bind_private_socket(path: Path) -> socket.socket:
    """A listening unix socket at `path` that only this user can connect to."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # umask is process-wide; the window is one synchronous bind() call.
    previous = os.umask(_UMASK)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(previous)
    os.chmod(path, SOCKET_MODE)
    sock.listen(16)
    return sock


class ControlServer:
    """Serves `ControlApi` on a unix socket, one JSON request and response per line."""

    def __init__(self, path: Path | str, api: ControlApi) -> None:
        self._path = Path(path)
        self._api = api
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def accepting(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        await clear_stale_socket(self._path)
        sock = bind_private_socket(self._path)
        self._inode = self._path.stat().st_ino
        self._server = await asyncio.start_unix_server(
            self._serve, sock=sock, limit=MAX_REQUEST_BYTES
        )
        structlog.get_logger(__name__).info("control_listening", path=str(self._path))

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        await server.wait_closed()
        self._remove_own_socket()

    def _remove_own_socket(self) -> None:
        # Another daemon may have replaced the file since; only ours is removed.
        with contextlib.suppress(FileNotFoundError):
            if self._path.lstat().st_ino == self._inode:
                self._path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._answer_lines(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-answer; nothing to tell it
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer_lines(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                writer.write(encode_error("bad_frame", "request line too long"))
                await writer.drain()
                return
            if not line:
                return
            if line.strip():
                writer.write(await self.answer(line))
                await writer.drain()

    async def answer(self, line: bytes) -> bytes:
        """The response line for one request line; never raises."""
        try:
            request = decode_request(line)
            result = await self._call(request)
        except PayflowError as exc:
            return encode_error(exc.code, str(exc))
        except Exception:  # noqa: BLE001  (a bug behind one command must not end the session)
            structlog.get_logger(__name__).exception("control_command_failed")
            return encode_error("internal", "the daemon failed to answer; see its log")
        return encode_result(result)

    async def _call(self, request: Request) -> Any:
        method = getattr(self._api, request.cmd)
        args = tuple(request.args.values())
        if inspect.iscoroutinefunction(method):
            return await method(*args)
        result = await asyncio.to_thread(method, *args)
        return await result if inspect.isawaitable(result) else result
