"""How many modules three paths through the node visit, on both sides (JSON lines).

`python -m bench.paths` starts a small federation on this machine (an agency, `hrss`,
running a real `shuqiao serve` over mutual TLS, and a fund centre asking it through the
`shuqiao` command line, as tests/e2e does) and counts the distinct modules under `node/`
and `protocols/` whose functions ran during:

  membership   one `shuqiao query membership` (30 applicants, half of them registered)
  append       one ledger append: every call of `QueryRecord.write` (the query-log row,
               the completed ledger entry and its receipt) during that membership query
  aggregate    one `shuqiao query aggregate` (sum of contribution_base by district)

Each is counted in the asking process (`asker`: the CLI and any worker process it
starts) and in the answering one (`answerer`: `shuqiao serve` and its workers).

How. A `sitecustomize.py` written to a temporary directory and put first on
`PYTHONPATH` installs a `sys.setprofile`/`threading.setprofile` hook in every Python
process of the run (spawned workers inherit the environment). The hook notes a module
the first time one of its functions (or generators) runs in the current *epoch*, which
this tool announces through a file the hook polls every 10 ms. What counts as the
query's work:

  - answerer: everything between the epoch's start, announced while `serve` sits idle
    after a warm-up query of the same kind, and its end, when the asking CLI has exited.
    The warm-up leaves out what a node does once per process (first contact, loading
    keys and the dataset's tables) rather than once per query, and measuring starts
    after the server's first maintenance round (witnessing, 5 s after it starts; the
    next is minutes away), which no query causes. The same span again with
    no query (`idle`) shows what the server does on its own; it is reported, not
    subtracted.
  - asker: the whole CLI process, which is the query from the operator's side (parsing
    the command, opening the node, reading the input, the protocol, writing results).
  - on both sides, code run while a module is being imported (module bodies, class
    bodies, decorators) is not a visit: a module counts when its functions run, not
    when it is loaded. Modules first imported during the query are listed apart
    (`imported`).

Counts cover `node/` (the generated `node/rpc/` included) and `protocols/`, each module
(package `__init__`s included) once. Run from a tree's root; the same file runs on the
flat `node/` of earlier trees (it imports localnet and synthetic from either place).
`--functions` also lists which functions ran, to see why a module is on a path.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PURPOSE = "benchmark"
DISTRICTS = ("天宁区", "钟楼区")
FIRST_MAINTENANCE_S = 6.0  # `serve` witnesses partners 5 s after it starts, then every 300 s
SCOPE = ("querylog", "QueryRecord.write")  # (module's last name, qualified function name)

HOOK = r'''
import os, sys, threading
_OUT = os.environ.get("SHUQIAO_PATHS_OUT")
if _OUT:
    _ROOT = os.environ["SHUQIAO_PATHS_ROOT"].rstrip(os.sep) + os.sep
    _ROLE = os.environ["SHUQIAO_PATHS_ROLE"]
    _SCOPE_MOD, _SCOPE_FN = os.environ["SHUQIAO_PATHS_SCOPE"].split(":")
    _DETAIL = os.environ.get("SHUQIAO_PATHS_FUNCTIONS") == "1"
    _CONTROL = os.path.join(_OUT, "epoch")
    _IGNORE, _FUNC, _BODY, _SCOPED = 0, 1, 2, 3
    _cache = {}
    _seen = set()
    _tl = threading.local()
    _state = {"epoch": "", "fd": None, "pid": None}

    def _read_epoch():
        try:
            with open(_CONTROL) as f:
                return f.read().strip()
        except OSError:
            return "startup"

    def _write(line):
        pid = os.getpid()
        if _state["pid"] != pid:
            _state["fd"] = os.open(os.path.join(_OUT, "%s-%d.tsv" % (_ROLE, pid)),
                                   os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            _state["pid"] = pid
        os.write(_state["fd"], line.encode())

    def _note(scope, module):
        key = (_state["epoch"], scope, module)
        if key not in _seen:
            _seen.add(key)
            _write("%s\t%s\t%s\n" % key)

    def _classify(code):
        path = code.co_filename
        module = None
        if path.startswith(_ROOT) and path.endswith(".py"):
            rel = path[len(_ROOT):-3].split(os.sep)
            if rel[0] in ("node", "protocols"):
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                module = ".".join(rel)
        if code.co_name == "<module>":
            kind = _BODY
        elif module is None:
            kind = _IGNORE
        elif rel[-1] == _SCOPE_MOD and code.co_qualname == _SCOPE_FN:
            kind = _SCOPED
        else:
            kind = _FUNC
        _cache[code] = (kind, module)
        return kind, module

    def _hook(frame, event, arg):
        if event == "call":
            code = frame.f_code
            kind, module = _cache.get(code) or _classify(code)
            if kind == _IGNORE:
                return
            if kind == _BODY:
                if frame.f_globals.get("__name__") != "__main__":
                    _tl.imports = getattr(_tl, "imports", 0) + 1
                    if module is not None:
                        _note("imported", module)
                return
            if getattr(_tl, "imports", 0):
                return
            if kind == _SCOPED:
                _tl.scoped = getattr(_tl, "scoped", 0) + 1
            _note("all", module)
            if _DETAIL:
                _note("function", module + ":" + code.co_qualname)
            if getattr(_tl, "scoped", 0):
                _note("append", module)
                if _DETAIL:
                    _note("append-function", module + ":" + code.co_qualname)
        elif event == "return":
            hit = _cache.get(frame.f_code)
            if hit is None:
                return
            if hit[0] == _BODY and frame.f_globals.get("__name__") != "__main__":
                _tl.imports = max(0, getattr(_tl, "imports", 0) - 1)
            elif hit[0] == _SCOPED and not getattr(_tl, "imports", 0):
                _tl.scoped = max(0, getattr(_tl, "scoped", 0) - 1)

    def _poll():
        import time
        while True:
            _state["epoch"] = _read_epoch()
            time.sleep(0.01)

    def _start():
        _state["epoch"] = _read_epoch()
        threading.Thread(target=_poll, name="paths-epoch", daemon=True).start()
        threading.setprofile(_hook)
        sys.setprofile(_hook)

    os.register_at_fork(after_in_child=lambda: threading.Thread(
        target=_poll, name="paths-epoch", daemon=True).start())
    _start()
'''


def _emit(**fields) -> None:
    print(json.dumps(fields, ensure_ascii=False), flush=True)


def _note(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _devtools():
    try:
        from node.devtools.localnet import Federation
        from node.devtools.synthetic import write_csv
    except ImportError:  # the flat node/ of earlier trees
        from node.localnet import Federation
        from node.synthetic import write_csv
    return Federation, write_csv


def _people(rng: random.Random, n: int) -> list[str]:
    from adapters import synthetic_resident_id
    out: set[str] = set()
    while len(out) < n:
        out.add(synthetic_resident_id(rng))
    return sorted(out)


class Probe:
    """The hook's environment, its epoch file and what the processes wrote."""

    def __init__(self, work: Path, functions: bool = False) -> None:
        self.functions = functions
        self.out = work / "visits"
        self.out.mkdir(parents=True)
        hook_dir = work / "hook"
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(HOOK)
        self.path = os.pathsep.join([str(hook_dir), str(ROOT)])

    def env(self, role: str) -> dict[str, str]:
        return {"PYTHONPATH": self.path, "SHUQIAO_PATHS_OUT": str(self.out),
                "SHUQIAO_PATHS_ROOT": str(ROOT), "SHUQIAO_PATHS_ROLE": role,
                "SHUQIAO_PATHS_SCOPE": ":".join(SCOPE),
                "SHUQIAO_PATHS_FUNCTIONS": "1" if self.functions else "0"}

    def epoch(self, name: str) -> None:
        tmp = self.out / "epoch.tmp"
        tmp.write_text(name)
        os.replace(tmp, self.out / "epoch")
        time.sleep(0.2)  # every process polls each 10 ms

    def visits(self, role: str, epoch: str, scope: str) -> set[str]:
        found: set[str] = set()
        for f in self.out.glob(f"{role}-*.tsv"):
            for line in f.read_text().splitlines():
                e, s, module = line.split("\t")
                if e == epoch and s == scope:
                    found.add(module)
        return found


def _counts(modules: set[str]) -> dict:
    node = sorted(m for m in modules if m.split(".")[0] == "node")
    protocols = sorted(m for m in modules if m.split(".")[0] == "protocols")
    return {"modules": len(node) + len(protocols), "node_modules": len(node),
            "protocols_modules": len(protocols),
            "node": node, "protocols": protocols}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def run(work: Path, *, functions: bool = False) -> None:
    Federation, write_csv = _devtools()
    rng = random.Random(11)
    pop = _people(rng, 230)
    registry, outsiders = pop[:200], pop[200:]
    asked = registry[:15] + outsiders[:15]
    rng.shuffle(asked)
    data = work / "data"
    data.mkdir(parents=True)
    write_csv(data / "registry.csv", ["id", "contribution_base", "district"],
              ((p, rng.randint(2_500, 40_000), DISTRICTS[i % 2]) for i, p in enumerate(registry)))
    write_csv(data / "applicants.csv", ["申请编号", "身份证号"],
              ((f"A{i:03d}", p) for i, p in enumerate(asked)))
    fed = Federation(work / "fed")
    fed.add_node("hrss", partners=[{"id": "fund"}], datasets=[{"name": "workers", "grants": [{
        "partner": "fund", "purposes": [PURPOSE], "kinds": ["membership", "aggregate"],
        "min_elements": 10, "aggregate_columns": ["contribution_base", "district"],
        "min_group_size": 5}]}])
    fed.add_node("fund", partners=[{"id": "hrss"}])
    cfg = {n: str(fed.nodes[n].config_path) for n in ("hrss", "fund")}
    probe = Probe(work, functions)
    commands = {
        "membership": ("query", "membership", "--config", cfg["fund"], "--partner", "hrss",
                       "--dataset", "workers", "--purpose", PURPOSE,
                       "--input", str(data / "applicants.csv"), "--id-column", "身份证号",
                       "--out", str(work / "membership.csv")),
        "aggregate": ("query", "aggregate", "--config", cfg["fund"], "--partner", "hrss",
                      "--dataset", "workers", "--purpose", PURPOSE,
                      "--input", str(data / "applicants.csv"), "--id-column", "身份证号",
                      "--value", "contribution_base", "--op", "sum", "--group-by", "district"),
    }
    with fed:
        fed.cli("dataset", "add", "--config", cfg["hrss"], "--name", "workers",
                "--csv", str(data / "registry.csv"), "--id-column", "id",
                "--attribute", "contribution_base", "--attribute", "district")
        saved = dict(os.environ)
        os.environ.update(probe.env("answerer"))
        try:
            fed.start("hrss")
        finally:
            os.environ.clear()
            os.environ.update(saved)
        fed.set_partner_address("fund", "hrss", fed.nodes["hrss"].address)
        time.sleep(FIRST_MAINTENANCE_S)
        seconds = {}
        for path, args in commands.items():
            for epoch in (f"warmup-{path}", path):
                probe.epoch(epoch)
                _note(f"paths: {epoch}")
                t0 = time.monotonic()
                r = fed.cli(*args, check=False, env=probe.env("asker"))
                if r.returncode:
                    raise SystemExit(f"{path} query failed ({r.returncode}):\n{r.stdout}{r.stderr}")
                seconds[path] = time.monotonic() - t0
            probe.epoch(f"idle-{path}")
            time.sleep(seconds[path])
        probe.epoch("done")
    commit = _commit()
    for path, epoch, scope in (("membership", "membership", "all"),
                               ("append", "membership", "append"),
                               ("aggregate", "aggregate", "all")):
        for role in ("asker", "answerer"):
            extra = {}
            if scope == "all":
                extra["imported"] = sorted(probe.visits(role, epoch, "imported"))
            if functions:
                extra["functions"] = sorted(probe.visits(
                    role, epoch, "function" if scope == "all" else "append-function"))
            if role == "answerer" and scope == "all":
                extra["idle"] = sorted(probe.visits(role, f"idle-{path}", "all"))
            _emit(bench="paths", commit=commit, path=path, side=role,
                  **_counts(probe.visits(role, epoch, scope)), **extra)
        # The path as a newcomer follows it: every module either process ran, once.
        both = set(probe.visits("asker", epoch, scope)) | set(probe.visits("answerer", epoch, scope))
        _emit(bench="paths", commit=commit, path=path, side="both", **_counts(both))


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.paths", description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, help="keep the federation and the hook's notes here")
    ap.add_argument("--functions", action="store_true",
                    help="also list the functions that ran (module:qualified name)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="shuqiao-paths-"))
    try:
        run(work, functions=args.functions)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
