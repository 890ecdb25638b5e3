"""The README's quickstart, run as a newcomer would: its Python block against a real daemon,
printing what the README says it prints, and again (a second run must not trip over the first)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.daemon_harness import REPO, running_daemon

README = REPO / "README.md"
QUICKSTART_URL = "ws://127.0.0.1:8765"


def _quickstart() -> tuple[str, list[str]]:
    """The quickstart's script and the output shown under it."""
    section = README.read_text(encoding="utf-8").split("## Quickstart", 1)[1]
    script = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert script is not None, "the quickstart has no Python block"
    shown = re.search(r"```\n(.*?)```", section[script.end() :], re.DOTALL)
    assert shown is not None, "the quickstart shows no output"
    return script.group(1), shown.group(1).splitlines()


def test_the_quickstart_prints_what_the_readme_shows_every_time(tmp_path: Path) -> None:
    script, shown = _quickstart()
    assert QUICKSTART_URL in script
    with running_daemon(tmp_path) as daemon:
        path = tmp_path / "quickstart.py"
        path.write_text(script.replace(QUICKSTART_URL, daemon.url), encoding="utf-8")
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, str(path)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == shown
        assert daemon.stop() == 0
