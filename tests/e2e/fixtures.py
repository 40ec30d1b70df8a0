"""A small federation of real `shuqiao serve` processes for end-to-end tests."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from adapters import synthetic_resident_id
from node.localnet import Federation
from node.synthetic import write_csv

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
                            "grants": [{"partner": "fund", "purposes": [PURPOSE]}]},
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
