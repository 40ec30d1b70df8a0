"""`backup` and `restore` handle SQLite storage; other databases get their own tool named."""
from __future__ import annotations

import pytest

from node.core.config import load_config
from node.runtime.backup import sqlite_database
from node.runtime.backup_manifest import BackupError

from .test_config import BASE as CONFIG

@pytest.mark.parametrize("url, tool", [
    ("postgresql+psycopg://shuqiao@db.example/shuqiao", "pg_dump"),
    ("mysql+pymysql://shuqiao@db.example/shuqiao", "mariadb-dump"),
])
def test_other_databases_are_refused_naming_their_tool(tmp_path, url, tool):
    (tmp_path / "node.toml").write_text(CONFIG + f'[storage]\nurl = "{url}"\n')
    with pytest.raises(BackupError) as refused:
        sqlite_database(load_config(tmp_path / "node.toml"), "backup")
    assert tool in str(refused.value) and "SQLite storage only" in str(refused.value)
    assert "shuqiao@" not in str(refused.value)  # the URL (and any password in it) is not echoed


def test_sqlite_storage_is_the_file_in_the_data_directory(tmp_path):
    (tmp_path / "node.toml").write_text(CONFIG)
    assert sqlite_database(load_config(tmp_path / "node.toml"), "backup") == tmp_path / "var" / "node.db"
