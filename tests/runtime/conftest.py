"""Fixtures shared by the journal's tests: a journal file in the test's own directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.sqlite_journal import SQLiteJournal


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(db: Path) -> Iterator[SQLiteJournal]:
    with SQLiteJournal(db) as opened:
        yield opened
