"""Editing the node's config file in place: one dataset grant, validated, written atomically.

The console's grant editor changes (adds, removes) one `[[datasets.grants]]` table and nothing else: the
file is parsed, that table replaced (or added), the whole document validated with the
config schema (node/core/config.py) exactly as `load_config` would, and only then
written: to a temporary file beside it, with the old file's permissions, moved over the
old one in one step, after the old one was kept as `<name>.bak`. A reader (a reload, a
restart) sees the old file or the new one, never half of one. Keys of the grant the
editor does not show stay as they were; TOML comments do not survive the rewrite.

Putting the edited file in force is the caller's business: the same reload a SIGHUP
runs (node/runtime/live_config.py).
"""
from __future__ import annotations

import os
import shutil
import threading
import tomllib
import uuid
from pathlib import Path

from pydantic import ValidationError

from node.core.config import ConfigError, DatasetGrant, NodeConfig, load_config
from node.runtime.admin_log import config_digest

BACKUP_SUFFIX = ".bak"
_editing = threading.Lock()  # one edit of the file at a time in this process


class GrantInvalid(ConfigError):
    """The edited grant, or the config with it, does not validate; `problems` lists
    (field, message) pairs, nothing was written."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in problems))
        self.problems = problems


def problems_of(exc: ValidationError, prefix: tuple = ()) -> list[tuple[str, str]]:
    """(field, message) for each error of a pydantic validation, without the input values."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"][len(prefix):]) if err["loc"][:len(prefix)] == prefix \
            else ".".join(str(x) for x in err["loc"])
        out.append((loc, err["msg"].removeprefix("Value error, ")))
    return out


def raw_grant(path: Path, dataset: str, partner: str) -> dict | None:
    """The grant's table as the file holds it (None: the dataset grants the partner nothing)."""
    raw = _read(path)
    section = _dataset(raw, dataset)
    return next((dict(g) for g in section.get("grants", []) if g.get("partner") == partner), None)


def validate_grant(grant: dict) -> DatasetGrant:
    """The grant validated on its own.

    Raises:
        GrantInvalid: with each field's problem.
    """
    try:
        return DatasetGrant.model_validate(grant)
    except ValidationError as exc:
        raise GrantInvalid(problems_of(exc)) from None


def write_grant(path: Path, in_force: NodeConfig, dataset: str, grant: dict) -> NodeConfig:
    """Replace (or add) the grant of `grant["partner"]` on `dataset` in the config file.

    Refused when the file already differs from the config in force (`in_force`): the
    edit would carry changes nobody reviewed here into force with it.

    Returns:
        The config the file now holds (validated).
    Raises:
        GrantInvalid: the grant or the whole config does not validate; nothing written.
        ConfigError: the file differs from the config in force, or cannot be read.
    """
    validate_grant(grant)

    def put(grants: list) -> None:
        at = next((i for i, g in enumerate(grants) if g.get("partner") == grant["partner"]), None)
        if at is None:
            grants.append(grant)
        else:
            grants[at] = grant
    return _edit(path, in_force, dataset, put)


def remove_grant(path: Path, in_force: NodeConfig, dataset: str, partner: str) -> NodeConfig:
    """Take the grant of `partner` on `dataset` out of the config file (same rules as
    `write_grant`).

    Raises:
        ConfigError: there is no such grant, or as `write_grant`.
    """
    def drop(grants: list) -> None:
        kept = [g for g in grants if g.get("partner") != partner]
        if len(kept) == len(grants):
            raise ConfigError(f"dataset {dataset!r} grants nothing to partner {partner!r}")
        grants[:] = kept
    return _edit(path, in_force, dataset, drop)


def _edit(path: Path, in_force: NodeConfig, dataset: str, change) -> NodeConfig:
    """`change(grants)` on the dataset's grants list of the file, validated, then written."""
    with _editing:
        current = load_config(path)
        if config_digest(current) != config_digest(in_force):
            raise ConfigError(
                f"the config file {path} holds changes that are not in force; apply them "
                "(shuqiao reload) or undo them before editing grants here")
        raw = _read(path)
        change(_dataset(raw, dataset).setdefault("grants", []))
        try:
            edited = NodeConfig.model_validate({**raw, "base_dir": path.resolve().parent})
        except ValidationError as exc:
            raise GrantInvalid(problems_of(exc)) from None
        _replace(path, _dumps(raw))
    return edited


def restore_backup(path: Path) -> None:
    """Put the file kept before the last edit back (a reload refused the edited one)."""
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    with _editing:
        _replace(path, backup.read_bytes())


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from None


def _dataset(raw: dict, name: str) -> dict:
    section = next((d for d in raw.get("datasets", []) if d.get("name") == name), None)
    if section is None:
        raise ConfigError(f"dataset {name!r} is not declared in the config file")
    return section


def _dumps(raw: dict) -> bytes:
    import tomli_w
    return tomli_w.dumps(raw).encode("utf-8")


def _replace(path: Path, body: bytes) -> None:
    """Write `body` over `path` atomically, keeping the old file as `<name>.bak`."""
    mode = path.stat().st_mode & 0o777
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    shutil.copy2(path, backup)
    os.chmod(backup, mode)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
