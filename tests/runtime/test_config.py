"""Settings precedence and validation: flags > environment > TOML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import HostPort, Settings, load_settings
from runtime.errors import ConfigError


def test_defaults_match_the_contract(tmp_path: Path) -> None:
    settings = load_settings([], {}, stderr_is_tty=False)
    assert settings.listen == HostPort("127.0.0.1", 8765)
    assert settings.http == HostPort("127.0.0.1", 8766)
    assert settings.db == Path("payflowd.db")
    assert settings.control == Path("payflowd.sock")
    assert settings.provider == "dummy"
    assert settings.preserve_window == 300.0
    assert settings.feeds == ()
    assert settings.log_format == "json"


def test_log_format_defaults_to_console_on_a_terminal() -> None:
    assert load_settings([], {}, stderr_is_tty=True).log_format == "console"


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    config = tmp_path / "payflowd.toml"
    config.write_text(
        'listen = "127.0.0.1:1001"\nhttp = "127.0.0.1:2001"\npreserve_window = 7\n'
        'feeds = ["ws://127.0.0.1:9/a"]\n'
    )
    env = {"PAYFLOWD_CONFIG": str(config), "PAYFLOWD_HTTP": "127.0.0.1:2002"}
    settings = load_settings(["--listen", "127.0.0.1:1003"], env, stderr_is_tty=False)
    assert settings.listen.port == 1003  # flag over file
    assert settings.http.port == 2002  # env over file
    assert settings.preserve_window == 7.0  # file over default
    assert settings.feeds == ("ws://127.0.0.1:9/a",)


def test_feeds_from_repeated_flags_and_comma_separated_env() -> None:
    flags = ["--feed", "ws://127.0.0.1:1/x", "--feed", "wss://feeds.example/y"]
    assert load_settings(flags, {}).feeds == ("ws://127.0.0.1:1/x", "wss://feeds.example/y")
    env = {"PAYFLOWD_FEEDS": "ws://127.0.0.1:1/x, ws://127.0.0.1:2/y"}
    assert load_settings([], env).feeds == ("ws://127.0.0.1:1/x", "ws://127.0.0.1:2/y")


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--listen", "nohost"], {}, "--listen"),
        (["--listen", "127.0.0.1:70000"], {}, "--listen"),
        (["--provider", "paypal"], {}, "--provider"),
        (["--provider", "stripe"], {}, "STRIPE_API_KEY"),
        (["--preserve-window", "-3"], {}, "--preserve-window"),
        (["--preserve-window", "nan"], {}, "--preserve-window"),
        (["--feed", "http://127.0.0.1:1/"], {}, "--feed"),
        (["--log-format", "xml"], {}, "--log-format"),
        (["--db", "/nonexistent-dir/x.db"], {}, "--db"),
        (["--notify-url", "http://127.0.0.1:9/n"], {}, "PAYFLOWD_NOTIFY_SECRET"),
        (["--bogus"], {}, "unrecognized arguments"),
        ([], {"PAYFLOWD_PRESERVE_WINDOW": "soon"}, "PAYFLOWD_PRESERVE_WINDOW"),
        ([], {"PAYFLOWD_CONFIG": "/nonexistent/payflowd.toml"}, "config file"),
    ],
)
def test_bad_values_raise_one_line_naming_the_source(
    argv: list[str], env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(argv, env)
    message = str(excinfo.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("listen = [", "not valid TOML"),
        ("lisen = '127.0.0.1:1'", "unknown key 'lisen'"),
        ("preserve_window = 'x'", "preserve_window"),
        ("preserve_window = " + "9" * 400, "preserve_window"),  # past a float's range
        ("notify_url = 'https://[bad'", "notify_url"),
    ],
)
def test_bad_config_files_are_rejected(tmp_path: Path, content: str, fragment: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        load_settings(["--config", str(config)], {})


def test_secrets_are_not_in_repr() -> None:
    settings = load_settings(
        ["--provider", "stripe"], {"STRIPE_API_KEY": "sk_test_abc123", "PAYFLOWD_API_KEY": "k9"}
    )
    assert settings.stripe_api_key == "sk_test_abc123"
    assert "sk_test_abc123" not in repr(settings)
    assert "k9" not in repr(Settings(api_key="k9"))


@pytest.mark.parametrize("zero", ["0", "0.0", "0e0", " 0.000 "])
def test_a_zero_latency_is_accepted_however_it_is_written(zero: str) -> None:
    assert load_settings(["--dummy-latency", zero], {}).dummy_latency == 0.0
    with pytest.raises(ConfigError, match="--dummy-latency"):
        load_settings(["--dummy-latency", "-0.5"], {})
