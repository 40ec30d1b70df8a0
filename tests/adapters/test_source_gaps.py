"""Small gaps in the sources: echoed cells of a headerless file, the line an encoding
error names, NUL bytes, and SQLite sources that could write files."""
from __future__ import annotations

import random
import sqlite3

import pytest

from adapters import SourceError, open_csv, open_sql, read_identifiers, synthetic_resident_id
from adapters.headers import show_columns


@pytest.fixture
def resident() -> str:
    return synthetic_resident_id(random.Random(5))


def test_headerless_csv_never_echoes_its_first_row(tmp_path, resident):
    path = tmp_path / "no-header.csv"
    path.write_text(f"{resident},张三,天宁区\n{synthetic_resident_id(random.Random(6))},李四,钟楼区\n",
                    encoding="utf-8")
    with open_csv(path) as source:
        with pytest.raises(SourceError) as exc:
            read_identifiers(source, "身份证号", "cn_resident_id")
    message = str(exc.value)
    assert resident not in message and "张三" not in message and "天宁区" not in message
    assert "column 1, column 2, column 3" in message and "header row" in message


def test_headerless_csv_with_repeated_cells_never_echoes_them(tmp_path, resident):
    path = tmp_path / "no-header.csv"
    path.write_text(f"{resident},天宁区,天宁区\n", encoding="utf-8")
    with pytest.raises(SourceError) as exc:
        open_csv(path)
    assert resident not in str(exc.value) and "天宁区" not in str(exc.value)


def test_a_real_header_is_still_shown_by_name():
    assert show_columns(["身份证号", "姓名"]) == "'身份证号', '姓名'"


def test_encoding_error_inside_a_multiline_field_names_its_own_line(tmp_path):
    path = tmp_path / "multi.csv"
    # The record starts on line 2; the undecodable byte is on line 3.
    path.write_bytes(b'id,note\n1,"first\n\xff second"\n2,x\n')
    with open_csv(path, encoding="utf-8") as source:
        with pytest.raises(SourceError) as exc:
            list(source)
    assert exc.value.line == 3 and "line 3 " in str(exc.value)


def test_nul_byte_in_an_attribute_column_refused_with_its_line(tmp_path, resident):
    path = tmp_path / "nul.csv"
    path.write_bytes(f"身份证号,姓名\n{resident},ok\n{resident[:-1]}0,a\x00b\n".encode())
    with open_csv(path) as source:
        with pytest.raises(SourceError) as exc:
            list(source)
    assert exc.value.line == 3 and "NUL" in str(exc.value) and "'姓名'" in str(exc.value)


def test_nul_in_a_sql_attribute_is_a_rejected_row(tmp_path, resident):
    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE people (id TEXT PRIMARY KEY, note TEXT)")
        conn.execute("INSERT INTO people VALUES (?, ?)", (resident, "a\x00b"))
    conn.close()
    with open_sql(f"sqlite:///{db}", table="people") as source:
        (row,) = list(read_identifiers(source, "id", "cn_resident_id", ["note"]))
    assert getattr(row, "reason", "") == "column 'note' holds a NUL character"


@pytest.mark.parametrize("statement", [
    "ATTACH DATABASE '{target}' AS other",
    "VACUUM INTO '{target}'",
])
def test_sqlite_source_cannot_create_files(tmp_path, statement):
    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE people (id TEXT)")
    conn.close()
    target = tmp_path / "created.db"
    with pytest.raises(SourceError):
        with open_sql(f"sqlite:///{db}", query=statement.format(target=target)) as source:
            list(source)
    assert not target.exists()
