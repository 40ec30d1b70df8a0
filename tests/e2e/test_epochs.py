"""Key epochs between real nodes: rotation, the grace period, and stale caches refused."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import grpc
import pytest
import sqlalchemy as sa

from node.core.config import load_config
from node.runtime.context import NodeContext
from node.datasets.epochs import prune_expired

from node.rpc.shuqiao.v1 import membership_pb2 as pb

from . import fixtures as fx
from .fixtures import blinded, evaluate, refusal

pytestmark = pytest.mark.e2e


def ask_epoch(s, epoch: int, n: int = 3):
    d = fx.info(s)
    return [fx.header(s, total=n, epoch=epoch, version=d.version),
            pb.EvaluateRequest(batch=pb.ElementBatch(seq=0, elements=blinded(n))),
            pb.EvaluateRequest(finish=pb.Finish())]


@pytest.mark.parametrize("grace_days", [7, 0])
def test_rotation_with_and_without_grace(tmp_path, grace_days):
    s = fx.build(tmp_path, registry_size=300, applicants=60)
    s.fed.add_node("hrss", partners=[{"id": "fund"}], datasets=[{
        "name": "flexible_workers", "grace_days": grace_days,
        "grants": [{"partner": "fund", "purposes": [fx.PURPOSE]}]}])
    with s.fed:
        fx.start(s)
        fx.register(s)
        fx.query(s, tmp_path / "before.csv", check=True)
        assert fx.info(s).epoch == 1
        r = s.fed.cli("dataset", "rotate-key", "--config", s.cfg("hrss"), "--name", "flexible_workers")
        assert "now on key epoch 2 (300 tags rebuilt)" in r.stdout
        assert fx.info(s).epoch == 2
        if grace_days:
            evaluate(s, ask_epoch(s, 1))        # the previous epoch still answers
        else:
            err = refusal(s, ask_epoch(s, 1))  # a cached table of epoch 1 is useless now
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "key epoch 1" in err.details()
        evaluate(s, ask_epoch(s, 2))
        # The fund centre notices the new epoch, syncs its table and gets the same answers.
        fx.query(s, tmp_path / "after.csv", check=True)
        # Epoch 1's tables go when it stops answering: at once without a grace period.
        db = sa.create_engine(f"sqlite:///{s.fed.nodes['hrss'].directory / 'node.db'}")
        with db.connect() as conn:
            epochs = {t: sorted(conn.execute(sa.text(f"SELECT DISTINCT epoch FROM {t}")).scalars())
                      for t in ("row_tags", "tag_tables")}
        db.dispose()
        kept = [1, 2] if grace_days else [2]
        assert epochs == {"row_tags": kept, "tag_tables": kept}
        if grace_days:  # ...else when the grace period ends (the serving node checks hourly)
            ctx = NodeContext(load_config(s.fed.nodes["hrss"].config_path))
            try:
                later = datetime.now(timezone.utc) + timedelta(days=grace_days, hours=1)
                assert prune_expired(ctx, now=later) == [("flexible_workers", "fund", 1)]
                assert prune_expired(ctx, now=later) == []
                with ctx.engine.connect() as conn:
                    left = conn.execute(sa.text("SELECT DISTINCT epoch FROM row_tags")).scalars()
                    assert sorted(left) == [2]
            finally:
                ctx.close()
    assert (tmp_path / "before.csv").read_text() == (tmp_path / "after.csv").read_text()
