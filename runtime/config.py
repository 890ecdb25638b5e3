"""Daemon settings: flags beat environment, environment beats the TOML file, which beats defaults.

Everything is validated before anything starts, so a bad value costs the operator one line on stderr
and exit status 2, never a half-started daemon (no socket bound, no journal file created).
Secrets (API keys, webhook and notify secrets) are excluded from `repr` so a logged settings
object cannot leak them.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from runtime.errors import ConfigError

# Unix socket paths longer than this do not fit in sockaddr_un on Linux.
_MAX_UNIX_PATH = 107


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    listen: HostPort = HostPort("127.0.0.1", 8765)
    http: HostPort = HostPort("127.0.0.1", 8766)
    db: Path = Path("payflowd.db")
    control: Path = Path("payflowd.sock")
    provider: str = "dummy"
    stripe_api_base: str | None = None
    feeds: tuple[str, ...] = ()
    log_format: str = "json"
    preserve_window: float = 300.0
    notify_url: str | None = None
    dummy_latency: float = 0.0
    feed_ping_interval: float = 20.0
    feed_ping_timeout: float = 20.0
    retry_limit: int = 1
    stripe_api_key: str | None = field(default=None, repr=False)
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    notify_secret: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)


# --- value parsers: each takes the raw value (str from flag/env, any from TOML) and its name ---


def _host_port(raw: object, name: str) -> HostPort:
    text = _string(raw, name)
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not _is_ascii_number(port_text) or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{name}: expected HOST:PORT with a port from 0 to 65535, got {text!r}")
    return HostPort(host, int(port_text))


def _is_ascii_number(text: str) -> bool:
    # str.isdigit() also accepts "²" (int() refuses it) and "٨٧" (int() reads it as 87).
    return text.isascii() and text.isdigit()


def _string(raw: object, name: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{name}: expected a non-empty string, got {raw!r}")
    return raw.strip()


def _path_in_existing_dir(raw: object, name: str) -> Path:
    path = Path(_string(raw, name)).expanduser()
    parent = path.parent if str(path.parent) else Path()
    if not parent.is_dir():
        raise ConfigError(f"{name}: directory {str(parent)!r} does not exist")
    return path


def _socket_path(raw: object, name: str) -> Path:
    path = _path_in_existing_dir(raw, name)
    if len(str(path.absolute())) > _MAX_UNIX_PATH:
        raise ConfigError(f"{name}: socket path is longer than {_MAX_UNIX_PATH} characters")
    return path


def _choice(*choices: str) -> Callable[[object, str], str]:
    def parse(raw: object, name: str) -> str:
        value = _string(raw, name)
        if value not in choices:
            raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
        return value

    return parse


def _url(*schemes: str) -> Callable[[object, str], str]:
    def parse(raw: object, name: str) -> str:
        value = _string(raw, name)
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - reading it checks it: a port out of range raises
            valid = parts.scheme in schemes and bool(parts.hostname)
        except ValueError:  # a malformed host ("[bad") or port
            valid = False
        if not valid:
            raise ConfigError(f"{name}: expected a {'/'.join(schemes)} URL, got {value!r}")
        return value

    return parse


def _url_list(raw: object, name: str) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{name}: expected a list of ws:// or wss:// URLs")
    parse = _url("ws", "wss")
    return tuple(parse(item, name) for item in items if not isinstance(item, str) or item.strip())


def _positive_seconds(raw: object, name: str) -> float:
    try:
        value = (
            float(raw) if isinstance(raw, str | int | float) and not isinstance(raw, bool) else -1
        )
    except (ValueError, OverflowError):  # OverflowError: a TOML integer past float's range
        value = -1
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: expected a positive number of seconds, got {raw!r}")
    return value


def _non_negative_seconds(raw: object, name: str) -> float:
    numeric = isinstance(raw, str | int | float) and not isinstance(raw, bool)
    try:
        zero = numeric and float(raw) == 0  # type: ignore[arg-type]
    except (ValueError, OverflowError):
        zero = False
    return 0.0 if zero else _positive_seconds(raw, name)


def _non_negative_int(raw: object, name: str) -> int:
    text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not _is_ascii_number(text):
        raise ConfigError(f"{name}: expected a whole number >= 0, got {raw!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class _Option:
    key: str  # TOML key and Settings field
    flag: str | None
    env: str | None
    parse: Callable[[object, str], Any]
    help: str


_OPTIONS: tuple[_Option, ...] = (
    _Option("listen", "--listen", "PAYFLOWD_LISTEN", _host_port, "websocket bridge HOST:PORT"),
    _Option("http", "--http", "PAYFLOWD_HTTP", _host_port, "HTTP (webhooks, metrics, health)"),
    _Option("db", "--db", "PAYFLOWD_DB", _path_in_existing_dir, "SQLite journal file"),
    _Option("control", "--control", "PAYFLOWD_CONTROL", _socket_path, "payflowctl unix socket"),
    _Option("provider", "--provider", "PAYFLOWD_PROVIDER", _choice("stripe", "dummy"), "provider"),
    _Option(
        "stripe_api_base", "--stripe-api-base", "STRIPE_API_BASE", _url("http", "https"), "API URL"
    ),
    _Option("feeds", "--feed", "PAYFLOWD_FEEDS", _url_list, "upstream event feed (repeatable)"),
    _Option(
        "log_format", "--log-format", "PAYFLOWD_LOG_FORMAT", _choice("json", "console"), "logs"
    ),
    _Option(
        "preserve_window",
        "--preserve-window",
        "PAYFLOWD_PRESERVE_WINDOW",
        _positive_seconds,
        "seconds a flow with no client is preserved",
    ),
    _Option(
        "notify_url", "--notify-url", "PAYFLOWD_NOTIFY_URL", _url("http", "https"), "backend URL"
    ),
    _Option(
        "dummy_latency",
        "--dummy-latency",
        "PAYFLOWD_DUMMY_LATENCY",
        _non_negative_seconds,
        "simulated provider latency in seconds (dummy provider)",
    ),
    _Option(
        "feed_ping_interval",
        "--feed-ping-interval",
        "PAYFLOWD_FEED_PING_INTERVAL",
        _positive_seconds,
        "seconds between websocket pings to feeds",
    ),
    _Option(
        "feed_ping_timeout",
        "--feed-ping-timeout",
        "PAYFLOWD_FEED_PING_TIMEOUT",
        _positive_seconds,
        "seconds to wait for a feed's pong",
    ),
    _Option(
        "retry_limit",
        "--retry-limit",
        "PAYFLOWD_RETRY_LIMIT",
        _non_negative_int,
        "payment retries allowed after a decline",
    ),
    _Option("stripe_api_key", None, "STRIPE_API_KEY", _string, ""),
    _Option("stripe_webhook_secret", None, "STRIPE_WEBHOOK_SECRET", _string, ""),
    _Option("notify_secret", None, "PAYFLOWD_NOTIFY_SECRET", _string, ""),
    _Option("api_key", None, "PAYFLOWD_API_KEY", _string, ""),
)
_FILE_KEYS = frozenset(opt.key for opt in _OPTIONS if opt.flag is not None)


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error and exits; we want one line through ConfigError."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="payflowd", description="Run the payflowd daemon.")
    parser.add_argument("--config", help="TOML file; flags and environment override it")
    for opt in _OPTIONS:
        if opt.flag == "--feed":
            parser.add_argument(opt.flag, dest=opt.key, action="append", help=opt.help)
        elif opt.flag is not None:
            parser.add_argument(opt.flag, dest=opt.key, help=opt.help)
    return parser


def _read_toml(path_text: str) -> dict[str, Any]:
    path = Path(path_text).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path_text!r}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path_text!r} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise ConfigError(f"config file {path_text!r}: unknown key {unknown[0]!r}")
    return data


def _raw_values(
    flags: argparse.Namespace, env: Mapping[str, str], file_data: Mapping[str, Any]
) -> dict[str, tuple[object, str]]:
    """For each option, the winning raw value and where it came from (for error messages)."""
    chosen: dict[str, tuple[object, str]] = {}
    for opt in _OPTIONS:
        flag_value = getattr(flags, opt.key, None)
        if flag_value is not None:
            chosen[opt.key] = (flag_value, opt.flag or opt.key)
        elif opt.env is not None and env.get(opt.env, "") != "":
            chosen[opt.key] = (env[opt.env], opt.env)
        elif opt.key in file_data:
            chosen[opt.key] = (file_data[opt.key], f"config key {opt.key!r}")
    return chosen


def _check_requirements(settings: Settings) -> None:
    if settings.provider == "stripe" and not settings.stripe_api_key:
        raise ConfigError("--provider stripe needs STRIPE_API_KEY in the environment")
    _check_distinct_ports(settings.listen, settings.http)
    if settings.notify_url and not settings.notify_secret:
        raise ConfigError("--notify-url needs PAYFLOWD_NOTIFY_SECRET in the environment")


def _check_distinct_ports(listen: HostPort, http: HostPort) -> None:
    # The same port for both would start the bridge and then fail binding HTTP, with a journal
    # already created; port 0 asks the OS for a free one, which never collides.
    if listen.port != 0 and listen.port == http.port:
        raise ConfigError(f"--listen and --http must use different ports, both are {listen.port}")


def load_settings(
    argv: Sequence[str], env: Mapping[str, str], *, stderr_is_tty: bool | None = None
) -> Settings:
    """Parse and validate everything; raises ConfigError with a one-line message."""
    flags = _build_parser().parse_args(list(argv))
    config_path = flags.config or env.get("PAYFLOWD_CONFIG") or None
    file_data = _read_toml(config_path) if config_path else {}
    opts = {opt.key: opt for opt in _OPTIONS}
    values = {
        key: opts[key].parse(raw, where)
        for key, (raw, where) in _raw_values(flags, env, file_data).items()
    }
    if "log_format" not in values:
        tty = sys.stderr.isatty() if stderr_is_tty is None else stderr_is_tty
        values["log_format"] = "console" if tty else "json"
    settings = Settings(**values)
    _check_requirements(settings)
    return settings


def load_from_process() -> Settings:
    return load_settings(sys.argv[1:], os.environ)
