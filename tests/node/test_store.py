"""Storage on SQLite and the real PostgreSQL server: schema, append-only log, atomic registration."""
from __future__ import annotations

import random
import uuid

import pytest
import sqlalchemy as sa

from adapters import IdType, open_csv, synthetic_resident_id
from node.core.config import load_config
from node.runtime.context import NodeContext
from node.datasets.registration import RegistrationError, list_versions, register
from node.devtools.localnet import Federation
from node.runtime.context import open_store
from node.devtools.synthetic import write_csv


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'node.db'}"
    return request.getfixturevalue("pg_database_url")


def test_query_log_refuses_update_and_delete_in_the_database(storage_url):
    engine = open_store(storage_url)
    from datetime import datetime, timezone
    from node.storage.schema import query_log
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        conn.execute(query_log.insert().values(
            query_id=str(uuid.uuid4()), role="asker", asker="fund", answerer="hrss", kind="membership",
            dataset="d", version=1, epoch=1, purpose="p", elements=1, outcome="answered", reason="",
            started_at=now, finished_at=now))
    for stmt in ("UPDATE query_log SET outcome = 'refused'", "DELETE FROM query_log"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(sa.text(stmt))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT outcome FROM query_log")).scalar_one() == "answered"
    open_store(storage_url).dispose()  # schema creation is idempotent
    engine.dispose()


@pytest.fixture
def agency(tmp_path, storage_url):
    fed = Federation(tmp_path / "fed")
    fed.add_node("hrss", partners=[{"id": "fund"}], storage_url=storage_url,
                 datasets=[{"name": "roll", "grants": [{"partner": "fund", "purposes": ["p1"]}]}])
    ctx = NodeContext(load_config(fed.nodes["hrss"].config_path))
    yield ctx
    ctx.close()


def csv_with_bad_rows(tmp_path, n=300, bad_lines=(5, 77)):
    rng = random.Random(1)
    rows = []
    for i in range(n):
        rid = synthetic_resident_id(rng)
        if i + 2 in bad_lines:
            rid = rid[:10]
        rows.append((rid, str(i)))
    path = tmp_path / "roll.csv"
    write_csv(path, ["sfzh", "n"], rows)
    return path


def test_registration_keeps_every_valid_row_and_reports_the_rest(agency, tmp_path):
    path = csv_with_bad_rows(tmp_path)
    with open_csv(path) as src:
        r = register(agency, "roll", src, id_column="sfzh", id_type=IdType.CN_RESIDENT_ID,
                     attributes=["n"], source_kind="csv", source_label=str(path))
    assert r.row_count == 298 and [(x.line, x.reason) for x in r.invalid] == [
        (5, "wrong length"), (77, "wrong length")]
    with agency.engine.connect() as conn:
        (v,) = list_versions(conn, "roll")
        tag_rows = conn.execute(sa.text("SELECT row_count FROM tag_tables")).scalar_one()
    assert (v.version, v.row_count, v.invalid_count, v.status) == (1, 298, 2, "active")
    assert tag_rows == 298


def test_strict_registration_aborts_as_a_whole(agency, tmp_path):
    path = csv_with_bad_rows(tmp_path)
    with open_csv(path) as src, pytest.raises(RegistrationError, match="line 5: wrong length"):
        register(agency, "roll", src, id_column="sfzh", id_type=IdType.CN_RESIDENT_ID, strict=True,
                 source_kind="csv", source_label=str(path))
    with agency.engine.connect() as conn:
        for table in ("datasets", "dataset_chunks", "tag_tables", "tag_chunks", "oprf_keys"):
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() == 0, table


def test_undeclared_dataset_and_empty_sources_are_refused(agency, tmp_path):
    path = csv_with_bad_rows(tmp_path)
    with open_csv(path) as src, pytest.raises(RegistrationError, match="not declared"):
        register(agency, "other", src, id_column="sfzh", id_type=IdType.CN_RESIDENT_ID,
                 source_kind="csv", source_label="x")
    empty = tmp_path / "empty.csv"
    write_csv(empty, ["sfzh"], [["bad"]])
    with open_csv(empty) as src, pytest.raises(RegistrationError, match="no valid row"):
        register(agency, "roll", src, id_column="sfzh", id_type=IdType.CN_RESIDENT_ID,
                 source_kind="csv", source_label="x")


def test_sealed_keys_only_in_the_database(agency, tmp_path):
    path = csv_with_bad_rows(tmp_path)
    with open_csv(path) as src:
        register(agency, "roll", src, id_column="sfzh", id_type=IdType.CN_RESIDENT_ID,
                 source_kind="csv", source_label="x")
    from node.keys.workers import key_purpose
    from protocols import oprf
    with agency.engine.connect() as conn:
        (blob,) = conn.execute(sa.text("SELECT sealed_key FROM oprf_keys")).scalars().all()
    key = oprf.OprfSecretKey.from_bytes(agency.kek.unseal(bytes(blob), purpose=key_purpose("roll", "fund", 1)))
    assert key.export_secret_bytes() not in bytes(blob)
