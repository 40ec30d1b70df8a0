"""Split views between real nodes: every log witnessed, rollbacks and forks raise alarms.

Three `shuqiao serve` processes laid out like configs/: the fund centre knows the
agencies' addresses, the agencies do not know the fund centre's. Witness rounds run every
second. Forks and rollbacks are made the way an operator would: restoring an older copy
of a node's data directory, or running a copy of it.
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import tomli_w
import tomllib

from node.core.config import load_config
from node.runtime.context import NodeContext
from node.ledger.http import new_token
from node.ledger.signing import partner_key
from node.ledger.sources import ExportSource, write_export
from node.ledger.witness_evidence import check_evidence
from node.ledger.witness import Witness
from node.devtools.localnet import Federation, LocalNode
from node.server.witnessing import coverage_warnings

pytestmark = pytest.mark.e2e

FAST = {"maintenance": {"witness_seconds": 1.0}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def federation(root: Path, *, hrss_reaches_edu: bool = False, edu_lists_hrss: bool = False,
               fund_extra: dict | None = None) -> Federation:
    fed = Federation(root / "fed")
    ports = {n: free_port() for n in ("fund", "hrss", "edu")}
    listen = {n: {"listen": f"127.0.0.1:{p}"} for n, p in ports.items()}
    edu = {"id": "edu", **({"address": f"127.0.0.1:{ports['edu']}"} if hrss_reaches_edu else {})}
    fed.add_node("hrss", partners=[{"id": "fund"}] + ([edu] if hrss_reaches_edu or edu_lists_hrss else []),
                 grpc=listen["hrss"], extra=FAST)
    fed.add_node("edu", partners=[{"id": "fund"}] + ([{"id": "hrss"}] if hrss_reaches_edu or edu_lists_hrss
                                                      else []), grpc=listen["edu"], extra=FAST)
    fed.add_node("fund", partners=[{"id": "hrss", "address": f"127.0.0.1:{ports['hrss']}"},
                                   {"id": "edu", "address": f"127.0.0.1:{ports['edu']}"}],
                 grpc=listen["fund"], extra={**FAST, **(fund_extra or {})})
    start(fed, "hrss", "edu", "fund")
    return fed


def start(fed: Federation, *nodes: str) -> None:
    """Start processes side by side (each takes seconds to import)."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(fed.start, nodes))


class Node:
    """A read-only look into a node's database while it serves."""

    def __init__(self, fed: Federation, node: str) -> None:
        self.ctx = NodeContext(load_config(fed.nodes[node].config_path))
        self.witness = Witness(self.ctx.ledger)

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc) -> None:
        self.ctx.close()

    def head(self):
        return self.ctx.ledger.sign_head()

    def accepted(self, partner: str):
        with self.ctx.engine.connect() as conn:
            return self.witness.last_seen(conn, partner)

    def cosigners(self) -> set[str]:
        return {c.witness for c in self.witness.cosignatures_of(self.head())}


def wait_for(fed: Federation, check, what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for: {what}")


def look(fed: Federation, node: str, fn):
    with Node(fed, node) as n:
        return fn(n)


def accepted_size(fed: Federation, node: str, log: str) -> int:
    head = look(fed, node, lambda n: n.accepted(log))
    return -1 if head is None else head.size


def open_kinds(fed: Federation, node: str, log: str) -> set[str]:
    return look(fed, node, lambda n: {c.kind for c in n.witness.open_conflicts(log)})


def key_of(fed: Federation, node: str) -> str:
    return look(fed, node, lambda n: n.ctx.ledger.public_key.text)


def export(fed: Federation, node: str, tmp: Path) -> str:
    """What `shuqiao audit export` writes (the same function, without another process)."""
    path = tmp / f"{node}-{time.monotonic_ns()}.jsonl"
    with Node(fed, node) as n, open(path, "wb") as f:
        write_export(n.ctx.ledger, f)
    return f"export:{path}"


def verify(fed: Federation, source: str, tmp: Path, *args: str):
    return fed.cli("audit", "verify", source, "--state-dir", str(tmp / f"state-{time.monotonic_ns()}"),
                   *args, check=False)


def edit_config(fed: Federation, node: str, change) -> None:
    path = fed.nodes[node].config_path
    config = tomllib.loads(path.read_text())
    change(config)
    path.write_bytes(tomli_w.dumps(config).encode())


def rename_fund(label: str):
    """A policy change: the node ledgers it at start, so its log grows by one entry."""
    def change(config):
        for p in config["partners"]:
            if p["id"] == "fund":
                p["display_name"] = label
    return change


def settled(fed: Federation, log: str, witnesses: tuple[str, ...]) -> bool:
    """Every witness accepted the log's current head, and the log holds their cosignatures."""
    with Node(fed, log) as n:
        head, cosigners = n.head(), n.cosigners()
    return set(witnesses) <= cosigners and all(
        look(fed, w, lambda x: x.accepted(log)) == head for w in witnesses)


def test_every_log_of_a_federation_is_cosigned_though_agencies_do_not_know_the_fund_centre(tmp_path):
    token, digest = new_token()
    http = {"http": {"listen": "127.0.0.1:0", "tls": False, "auditor_tokens": [digest]}}
    with federation(tmp_path, fund_extra=http) as fed:
        wait_for(fed, lambda: settled(fed, "fund", ("hrss", "edu")) and settled(fed, "hrss", ("fund",))
                 and settled(fed, "edu", ("fund",)), "every log cosigned by its partners")
        sizes = {n: look(fed, n, lambda x: x.ctx.ledger.size()) for n in ("fund", "hrss", "edu")}
        time.sleep(3)  # three more rounds: nothing changed, so nothing more is ledgered
        assert {n: look(fed, n, lambda x: x.ctx.ledger.size()) for n in sizes} == sizes
        for n in ("fund", "hrss", "edu"):
            assert look(fed, n, lambda x: x.witness.all_conflicts()) == []
        keys = [f"--witness-key=hrss={key_of(fed, 'hrss')}", f"--witness-key=edu={key_of(fed, 'edu')}"]
        r = verify(fed, export(fed, "fund", tmp_path), tmp_path, "--witness-quorum", "2", *keys)
        assert r.returncode == 0, r.stdout + r.stderr
        r = verify(fed, export(fed, "hrss", tmp_path), tmp_path, "--witness-quorum", "1",
                   f"--witness-key=fund={key_of(fed, 'fund')}")
        assert r.returncode == 0, r.stdout + r.stderr
        base = f"http://127.0.0.1:{fed.nodes['fund'].http_port}"
        auth = {"Authorization": f"Bearer {token}"}
        cosigned = httpx.get(base + "/v1/ledger/cosigned-head", headers=auth).json()
        assert {c["witness"] for c in cosigned["cosignatures"]} == {"hrss", "edu"}
        metrics = httpx.get(base + "/metrics", headers=auth).text
        assert "shuqiao_ledger_open_conflicts 0.0" in metrics
        configs = [load_config(fed.nodes[n].config_path) for n in ("fund", "hrss", "edu")]
        assert coverage_warnings(configs) == []
        assert coverage_warnings(configs[1:]) == [  # without the fund centre's config
            "the ledger of hrss is witnessed only if fund lists its address",
            "the ledger of edu is witnessed only if fund lists its address"]


def test_restored_older_data_directory_raises_the_alarm_on_every_witness(tmp_path):
    with federation(tmp_path, hrss_reaches_edu=True) as fed:
        wait_for(fed, lambda: settled(fed, "hrss", ("fund", "edu")), "hrss cosigned by fund and edu")
        hrss = fed.nodes["hrss"]
        fed.stop("hrss")
        backup = tmp_path / "hrss-backup"
        shutil.copytree(hrss.directory, backup)
        edit_config(fed, "hrss", rename_fund("公积金中心"))
        fed.start("hrss")
        grown = look(fed, "hrss", lambda n: n.ctx.ledger.size())
        wait_for(fed, lambda: all(accepted_size(fed, w, "hrss") >= grown for w in ("fund", "edu")),
                 "the grown log witnessed")
        fed.stop("hrss")
        shutil.rmtree(hrss.directory)
        shutil.copytree(backup, hrss.directory)  # the operator restores last week's copy
        fed.start("hrss")
        # The witnesses see a rollback, or (once the restored node has appended again) a
        # fork or an inconsistent head; the restored node learns of its own rollback from
        # the cosignatures the fund centre holds of heads it no longer has.
        wait_for(fed, lambda: open_kinds(fed, "fund", "hrss") and open_kinds(fed, "edu", "hrss")
                 and "rollback" in open_kinds(fed, "hrss", "hrss"), "the alarm raised by every witness")
        for node in ("fund", "edu", "hrss"):
            log = (fed.nodes[node].directory / "serve.log").read_text()
            assert re.search(r"ERROR shuqiao.alarm: LEDGER ALARM: \w+ of the ledger of hrss", log), node
        for node in ("fund", "hrss"):
            r = verify(fed, export(fed, node, tmp_path), tmp_path)
            assert r.returncode == 1 and re.search(r"OPEN \w+ of the ledger of hrss", r.stdout), r.stdout
        r = fed.cli("audit", "check", "--config", str(fed.nodes["edu"].config_path), check=False)
        assert r.returncode == 1 and "LEDGER ALARM" in r.stdout, r.stdout
        r = fed.cli("audit", "cross-check", "--asker", export(fed, "fund", tmp_path),
                    "--answerer", export(fed, "hrss", tmp_path), check=False)
        assert r.returncode == 1 and "OPEN " in r.stdout, r.stdout


def _copy(fed: Federation, root: Path, node: str, name: str) -> LocalNode:
    original = fed.nodes[node]
    shutil.copytree(original.directory, root / name)
    copy = LocalNode(node, root / name / original.config_path.name, root / name)
    fed.nodes[name] = copy
    return copy


def test_fork_shown_to_disjoint_witnesses_is_detected_through_their_exchange(tmp_path):
    with federation(tmp_path, edu_lists_hrss=True) as fed:
        wait_for(fed, lambda: settled(fed, "hrss", ("fund",)), "hrss cosigned by fund")
        fed.stop("hrss")
        _copy(fed, tmp_path, "hrss", "hrss-copy")
        edu_address = fed.nodes["edu"].address

        def copy_config(config):
            rename_fund("copy")(config)
            config["grpc"]["listen"] = "127.0.0.1:0"
            for p in config["partners"]:
                if p["id"] == "edu":
                    p["address"] = edu_address  # the copy shows itself to edu only
        edit_config(fed, "hrss-copy", copy_config)
        edit_config(fed, "hrss", rename_fund("real"))  # the real one goes on for the fund centre
        start(fed, "hrss", "hrss-copy")
        wait_for(fed, lambda: "fork" in open_kinds(fed, "fund", "hrss")
                 and "fork" in open_kinds(fed, "edu", "hrss"), "the fork recorded by both witnesses")
        for node, other in (("fund", "edu"), ("edu", "fund")):
            with Node(fed, node) as n:
                (fork,) = [c for c in n.witness.open_conflicts("hrss") if c.kind == "fork"]
                assert f"by {other}" in fork.detail  # learned from the other witness
                assert fork.first.size == fork.second.size and fork.first.root != fork.second.root
                key = partner_key(n.ctx.engine, "hrss")
                fork.first.verify(key)  # both heads signed by hrss's key: proof of the fork
                fork.second.verify(key)
            record = ExportSource(export(fed, node, tmp_path)[len("export:"):]).witnessing()
            (evidence,) = [c for c in record["conflicts"] if c["kind"] == "fork"]
            assert {c["witness"] for c in evidence["cosignatures"]} == {node, other}  # each cosigned one
            assert check_evidence(record)[-1].kind == "witness_conflict"  # checks offline, and is open
            assert [f.kind for f in check_evidence(record)].count("witness_evidence") == 0


def copy_listening_anywhere(config):
    rename_fund("copy")(config)
    config["grpc"]["listen"] = "127.0.0.1:0"


def settled_verify(fed: Federation, tmp: Path, witnesses: tuple[str, ...], keys: list[str], done):
    """Export hrss and verify it once `witnesses` cosigned its current head. hrss may still
    append between the two (what it ledgers of its witnesses' notes), leaving the export a
    head its witnesses have not reached yet: then wait and export again."""
    for _ in range(10):
        wait_for(fed, lambda: settled(fed, "hrss", witnesses), f"hrss cosigned by {witnesses}")
        r = verify(fed, export(fed, "hrss", tmp), tmp, *keys)
        if done(r):
            break
    return r


def test_fork_shown_to_one_witness_refused_then_resolved(tmp_path):
    with federation(tmp_path, hrss_reaches_edu=True) as fed:
        keys = ["--witness-quorum", "2", f"--witness-key=fund={key_of(fed, 'fund')}",
                f"--witness-key=edu={key_of(fed, 'edu')}"]
        r = settled_verify(fed, tmp_path, ("fund", "edu"), keys, lambda r: r.returncode == 0)
        assert r.returncode == 0, r.stdout + r.stderr
        fed.stop("hrss")
        _copy(fed, tmp_path, "hrss", "hrss-copy")
        edit_config(fed, "hrss-copy", copy_listening_anywhere)
        fed.start("hrss-copy")  # the copy shows edu its history...
        wait_for(fed, lambda: accepted_size(fed, "edu", "hrss") > accepted_size(fed, "fund", "hrss"),
                 "edu shown the copy")
        fed.stop("hrss-copy")
        edit_config(fed, "hrss", rename_fund("real"))
        fed.start("hrss")  # ...then the real node comes back with another
        wait_for(fed, lambda: "fork" in open_kinds(fed, "edu", "hrss"), "edu refuses the real head")
        r = settled_verify(fed, tmp_path, ("fund",), keys,
                           lambda r: "1 valid cosignature(s)" in r.stdout)  # fund cosigns the real head
        assert r.returncode == 1 and "1 valid cosignature(s)" in r.stdout, r.stdout
        true_root = look(fed, "hrss", lambda n: n.head().root.hex())
        r = fed.cli("witness", "resolve", "--config", str(fed.nodes["edu"].config_path),
                    "--partner", "hrss", "--root", true_root, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        # hrss learned from edu that its key signed the copy's history: its operator
        # resolves that too, once the copy is shut down
        r = fed.cli("witness", "resolve", "--config", str(fed.nodes["hrss"].config_path),
                    "--partner", "hrss", "--root", true_root, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        r = settled_verify(fed, tmp_path, ("fund", "edu"), keys,
                           lambda r: r.returncode == 0)  # edu cosigns the real head again
        assert r.returncode == 0, r.stdout + r.stderr
        with Node(fed, "edu") as edu:
            assert edu.witness.open_conflicts("hrss") == []
            assert "fork" in {c.kind for c in edu.witness.all_conflicts("hrss")}  # evidence stays
            verdicts = [e["verdict"] for e in (json.loads(d) for _, d in edu.ctx.ledger.entries())
                        if e["type"] == "witness" and e["partner"] == "hrss"]
            assert "fork" in verdicts and verdicts[-1] == "resolved"
