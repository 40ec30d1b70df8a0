"""The example systemd unit runs a command that exists, with a config that exists, and may write
where that config keeps the node's data — and nowhere else."""
from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath

import pytest
import typer

from node.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "systemd" / "shuqiao@.service"
EXAMPLES = sorted((ROOT / "configs" / "systemd").glob("*.toml"))


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: [Section], Key=Value (keys may repeat), # and ; comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a unit line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service, key: str) -> str:
    (value,) = service[key]
    return value


def registered_commands() -> dict:
    from node.cli import (audit, consent, dataset, ledger, ops, query, statistics,  # noqa: F401
                          witness)  # what `shuqiao` registers when it runs (node/cli/main.py)
    from node.cli.main import app
    return typer.main.get_command(app).commands


def test_the_unit_parser_reads_repeated_keys_and_refuses_garbage():
    assert parse_unit("[S]\n# c\nA=1\nA=2\n")["S"]["A"] == ["1", "2"]
    with pytest.raises(AssertionError):
        parse_unit("[S]\nno equals sign\n")


def test_hardening_baseline(service):
    assert one(service, "User") not in ("", "root") and one(service, "NoNewPrivileges") == "yes"
    assert one(service, "ProtectSystem") == "strict" and one(service, "PrivateTmp") == "yes"
    assert one(service, "ProtectHome") == "yes" and one(service, "CapabilityBoundingSet") == ""
    assert one(service, "UMask") == "0077"


@pytest.mark.parametrize("key, command", [("ExecStart", "serve"), ("ExecReload", "reload")])
def test_exec_lines_run_an_existing_subcommand_with_its_options(service, key, command):
    argv = shlex.split(one(service, key))
    assert PurePosixPath(argv[0]).name == "shuqiao" and PurePosixPath(argv[0]).is_absolute()
    commands = registered_commands()
    assert argv[1] == command and argv[1] in commands, f"`shuqiao {argv[1]}` is not a command"
    options = {o for p in commands[argv[1]].params for o in p.opts}
    assert {a for a in argv[2:] if a.startswith("-")} <= options
    assert argv[argv.index("--config") + 1] == "/etc/shuqiao/%i.toml"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_each_installed_example_config_fits_the_unit(service, example):
    """configs/systemd/<node>.toml is what the unit's comment says to install as
    /etc/shuqiao/<node>.toml for instance shuqiao@<node>."""
    assert f"configs/systemd/{example.name}" in UNIT.read_text()
    config = load_config(example)
    instance = config.node.id
    assert example.stem == instance
    writable = [PurePosixPath(p.replace("%i", instance)) for p in service["ReadWritePaths"]]
    state = PurePosixPath("/var/lib") / one(service, "StateDirectory").replace("%i", instance)
    data = PurePosixPath(config.data_dir)
    assert data == state and data in writable
    for path in (config.kek_path, PurePosixPath(config.storage_url.removeprefix("sqlite:///"))):
        assert data in PurePosixPath(path).parents, path  # written only inside the data directory
    for path in (config.tls.ca, config.tls.cert, config.tls.key):
        p = PurePosixPath(path)  # read-only under ProtectSystem=strict, but visible:
        assert p.is_absolute() and p.parts[1] not in ("home", "root", "tmp", "run"), p
    assert config.node.mode.value == "production" and config.tls.key_sealed


def test_there_is_an_installed_example_for_each_unit_instance_documented():
    assert EXAMPLES, "configs/systemd/ needs at least one installed-layout example"
