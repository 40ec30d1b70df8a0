"""A small federation of real `shuqiao serve` processes for end-to-end tests."""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from adapters import synthetic_resident_id
from node.devtools.localnet import Federation
from node.keys.pki import issue_node_cert, target_name
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.devtools.synthetic import write_csv
from protocols import oprf

PURPOSE = "flexible-worker-deposit"


@dataclass
class Scenario:
    fed: Federation
    registry: list[str]
    applicants: list[str]
    registry_csv: Path
    applicants_csv: Path

    def cfg(self, node: str) -> str:
        return str(self.fed.nodes[node].config_path)


def people(rng: random.Random, n: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add(synthetic_resident_id(rng))
    return sorted(out)


def build(root: Path, *, registry_size: int = 3000, applicants: int = 400, seed: int = 7,
          grant: dict | None = None,
          storage_url: str | None = None, grpc: dict | None = None) -> Scenario:
    rng = random.Random(seed)
    pop = people(rng, registry_size + applicants)
    rng.shuffle(pop)
    registry = pop[:registry_size]
    asked = rng.sample(registry, applicants // 2) + pop[registry_size:registry_size + applicants // 2]
    rng.shuffle(asked)
    data = root / "data"
    data.mkdir(parents=True)
    write_csv(data / "registry.csv", ["公民身份号码", "缴费月数", "所属区"],
              ((p, rng.randint(1, 60), "天宁区") for p in registry), encoding="gb18030")
    write_csv(data / "applicants.csv", ["申请编号", "身份证号"],
              ((f"A{i:05d}", p) for i, p in enumerate(asked)))
    fed = Federation(root / "fed")
    fed.add_node("hrss", partners=[{"id": "fund"}],
                 datasets=[{"name": "flexible_workers",
                            "grants": [{"partner": "fund", "purposes": [PURPOSE], **(grant or {})}]},
                           {"name": "ungranted"}],
                 storage_url=storage_url, grpc=grpc)
    fed.add_node("fund", partners=[{"id": "hrss"}])
    return Scenario(fed, registry, asked, data / "registry.csv", data / "applicants.csv")


def start(s: Scenario) -> None:
    s.fed.start("hrss")
    s.fed.set_partner_address("fund", "hrss", s.fed.nodes["hrss"].address)


def register(s: Scenario, *extra: str):
    return s.fed.cli("dataset", "add", "--config", s.cfg("hrss"), "--name", "flexible_workers",
                     "--csv", str(s.registry_csv), "--id-column", "公民身份号码",
                     "--attribute", "缴费月数", *extra)


def query(s: Scenario, out: Path, *extra: str, check: bool = False):
    return s.fed.cli("query", "membership", "--config", s.cfg("fund"), "--partner", "hrss",
                     "--dataset", "flexible_workers", "--purpose", PURPOSE,
                     "--input", str(s.applicants_csv), "--id-column", "身份证号",
                     "--out", str(out), *extra, check=check)


# -- a raw gRPC client playing the fund centre, or a misbehaving peer ----------------

def channel_as(s: Scenario, node_id: str, *, ca_dir=None) -> grpc.Channel:
    """A channel to hrss presenting a certificate for `node_id` (from `ca_dir`'s CA)."""
    ca_dir = ca_dir or s.fed.pki
    out = ca_dir / "clients"
    if not (out / f"{node_id}.pem").exists():
        issue_node_cert(ca_dir, node_id, out)
    creds = grpc.ssl_channel_credentials(
        root_certificates=(s.fed.pki / "ca.pem").read_bytes(),
        private_key=(out / f"{node_id}.key").read_bytes(),
        certificate_chain=(out / f"{node_id}.pem").read_bytes())
    return grpc.secure_channel(s.fed.nodes["hrss"].address, creds,
                               options=[("grpc.ssl_target_name_override", target_name("hrss"))])


def info(s) -> pb.DatasetInfo:
    with channel_as(s, "fund") as ch:
        listing = pb_grpc.MembershipStub(ch).ListDatasets(pb.ListDatasetsRequest(), timeout=10)
    (d,) = listing.datasets
    return d


def header(s, *, purpose=PURPOSE, total=3, query_id=None, dataset="flexible_workers", **kw):
    d = info(s)
    fields = dict(query_id=query_id or str(uuid.uuid4()), dataset=dataset, version=d.version,
                  epoch=d.epoch, purpose=purpose, total_elements=total, kind=pb.QUERY_KIND_MEMBERSHIP)
    fields.update(kw)
    return pb.EvaluateRequest(header=pb.QueryHeader(**fields))


def blinded(n: int) -> bytes:
    return oprf.blind([b"x%d" % i for i in range(n)])[1]


def evaluate(s, messages, node_id="fund"):
    with channel_as(s, node_id) as ch:
        return list(pb_grpc.MembershipStub(ch).Evaluate(iter(messages), timeout=20))


def refusal(s, messages, node_id="fund") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        evaluate(s, messages, node_id)
    return exc.value


def hrss_log(s) -> list[dict]:
    return query_log(s, "hrss")


def query_log(s, node: str) -> list[dict]:
    """A node's query log (SQLite storage), oldest first."""
    engine = sa.create_engine(f"sqlite:///{s.fed.nodes[node].directory / 'node.db'}")
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM query_log ORDER BY seq"))]
    engine.dispose()
    return rows


