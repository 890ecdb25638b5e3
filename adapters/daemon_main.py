"""`payflowd`: parse and check the configuration, then run the daemon in the foreground.

A bad flag or value costs the operator exactly one line on stderr and exit status 2, and nothing
is created first: no journal file, no socket (CONTRACT.md "Commands").
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import PurePath

from runtime.config import HostPort, Settings, load_settings
from runtime.errors import ConfigError

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point of the `payflowd` console script; returns the exit status."""
    try:
        settings = load_settings(
            sys.argv[1:] if argv is None else argv, os.environ if env is None else env
        )
        preflight(settings)
    except ConfigError as exc:
        sys.stderr.write(f"payflowd: {_one_line(str(exc))}\n")
        return EXIT_CONFIG
    # Imported only now: a bad flag is answered before the daemon's dependencies load.
    from adapters.daemon import run  # noqa: PLC0415

    return run(settings)


def preflight(settings: Settings) -> None:
    """Raise ConfigError (one line) for what would fail after files or sockets exist."""
    if settings.db.is_dir():
        raise ConfigError(f"--db: {settings.db} is a directory")
    _check_can_create("--db", settings.db)
    _check_can_create("--control", settings.control)
    _check_control_path(settings)
    _check_port("--listen", settings.listen)
    _check_port("--http", settings.http)


def _check_can_create(flag: str, path: PurePath) -> None:
    """Whether a file can be made beside `path` (the journal's -wal/-shm files need that too):
    probed with a temporary file, gone again before this returns."""
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".payflowd-probe-"):
            pass
    except OSError as exc:
        where = str(path.parent)
        raise ConfigError(f"{flag}: cannot create files in {where!r}: {exc.strerror}") from None


def _check_control_path(settings: Settings) -> None:
    path = settings.control
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"--control: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        return  # a dead daemon's leftover: the control server removes it
    finally:
        probe.close()
    raise ConfigError(f"--control: another daemon is already listening on {path}")


def _check_port(flag: str, where: HostPort) -> None:
    if where.port == 0:
        return
    family = socket.AF_INET6 if ":" in where.host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((where.host, where.port))
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ConfigError(f"{flag} {where}: {reason}") from None
    finally:
        probe.close()


def _one_line(message: str) -> str:
    return " ".join(message.split()) or "invalid configuration"


if __name__ == "__main__":
    sys.exit(main())
