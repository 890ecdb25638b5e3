"""Pure cores stay pure: importing one pulls in no actor, network, provider or logging library.

Each module is imported alone in a fresh interpreter, so nothing another test imported can hide
a dependency. Every `actors/*_core.py` is checked automatically; other pure modules are listed in
PURE_MODULES (extend it when you add one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PURE_MODULES: list[str] = [
    "actors.flow_core",
    "actors.flow_states",
    "actors.flow_events",
    "actors.flow_model",
    "actors.flow_view",
    "actors.flow_decisions",
    "actors.flow_provider_map",
    "actors.recovery",
    "actors.provider",
    "actors.flow_process",
    "actors.flow_calls",
    "actors.flow_journal",
    "actors.tokens",
]

FORBIDDEN: tuple[str, ...] = ("pykka", "websockets", "stripe", "msgpack", "structlog", "aiohttp")

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
forbidden = json.loads(sys.argv[2])
print(json.dumps(sorted(
    name for name in sys.modules
    if any(name == f or name.startswith(f + ".") for f in forbidden)
)))
"""


def _modules_to_check() -> list[str]:
    cores = {f"actors.{path.stem}" for path in (REPO / "actors").glob("*_core.py")}
    return sorted(cores | set(PURE_MODULES))


def _forbidden_imports_of(module: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, module, json.dumps(FORBIDDEN)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr}"
    found: list[str] = json.loads(result.stdout)
    return found


@pytest.mark.parametrize("module", _modules_to_check())
def test_pure_module_imports_no_io_library(module: str) -> None:
    assert _forbidden_imports_of(module) == []


def test_every_core_module_is_checked() -> None:
    assert "actors.flow_core" in _modules_to_check()


def test_the_probe_does_see_a_forbidden_import() -> None:
    # Without this, a probe that never reports anything would pass every module above.
    assert "msgpack" in _forbidden_imports_of("msgpack")
