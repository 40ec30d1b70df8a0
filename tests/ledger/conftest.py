"""Ledger fixtures: a fresh node database on SQLite and on the real PostgreSQL server."""
from __future__ import annotations

import pytest

from .helpers import open_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'node.db'}"
    return request.getfixturevalue("pg_database_url")


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'node.db'}"


@pytest.fixture
def engine(storage_url):
    engine = open_engine(storage_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url):
    engine = open_engine(sqlite_url)
    yield engine
    engine.dispose()
