"""The committed gRPC modules under node/rpc match the .proto sources (`make proto`)."""
from __future__ import annotations

import filecmp
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]


def test_generated_modules_match_proto_sources(tmp_path):
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto").rglob("*.proto"))
    assert protos
    import os
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        rc = protoc.main(["protoc", "--proto_path=node/rpc=proto", f"--python_out={tmp_path}",
                          f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", *protos])
    finally:
        os.chdir(cwd)
    assert rc == 0
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated
    for rel in generated:
        assert filecmp.cmp(tmp_path / rel, ROOT / rel, shallow=False), f"{rel} is stale: run `make proto`"
