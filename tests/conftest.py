"""Shared fixtures: real database servers, and a real local federation of nodes."""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

REQUIRE_SERVICES = os.environ.get("SHUQIAO_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get("SHUQIAO_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def unavailable(reason: str):
    """Skip, or fail where CI makes the service mandatory."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (SHUQIAO_REQUIRE_SERVICES=1 makes this mandatory)")
    pytest.skip(reason)


@pytest.fixture
def pg_database_url():
    """A fresh, empty PostgreSQL database on the local server, dropped afterwards."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"shuqiao_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unavailable(f"PostgreSQL is not reachable at {PG_ADMIN_URL.split('@')[-1]}: "
                    f"{type(exc.orig).__name__}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
