"""The committed gRPC modules under node/rpc match the .proto sources (`make proto`).

protoc runs in a subprocess: grpc_tools' bundled protobuf must not share a process with
TenSEAL, which the statistics tests load.
"""
from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_modules_match_proto_sources(tmp_path):
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto").rglob("*.proto"))
    assert protos
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "--proto_path=node/rpc=proto",
                    f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", *protos], cwd=ROOT, check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert len(generated) == 3 * len(protos)
    for rel in generated:
        assert filecmp.cmp(tmp_path / rel, ROOT / rel, shallow=False), f"{rel} is stale: run `make proto`"
