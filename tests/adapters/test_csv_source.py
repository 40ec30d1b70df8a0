"""CSV sources: encodings Chinese offices produce, line numbers, errors, bounded memory."""

from __future__ import annotations

import codecs
import hashlib
import tracemalloc
from pathlib import Path

import pytest

from adapters import SourceError, open_csv, open_source, read_identifiers

ROLL_HEADER = "身份证号,姓名,毕业院校,毕业年份\n"
ROLL_ROWS = [
    ("11010519491231002X", "张三", "常州大学", "2024"),
    ("320402198501011230", "李四", "江苏理工学院", "2025"),
]


def write(path: Path, text: str, encoding: str = "utf-8", bom: bytes = b"") -> Path:
    path.write_bytes(bom + text.encode(encoding))
    return path


def roll_text() -> str:
    return ROLL_HEADER + "".join(",".join(row) + "\n" for row in ROLL_ROWS)


def read_all(source) -> list[tuple[int, dict[str, str]]]:
    with source:
        return [(row.line, row.values) for row in source]


def test_utf8(tmp_path: Path) -> None:
    path = write(tmp_path / "roll.csv", roll_text())
    with open_csv(path) as source:
        assert source.encoding == "utf-8"
        assert source.columns == ["身份证号", "姓名", "毕业院校", "毕业年份"]
        rows = list(source)
    assert [r.line for r in rows] == [2, 3]
    assert rows[1].values == dict(zip(source.columns, ROLL_ROWS[1]))


def test_utf8_with_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "roll.csv", roll_text(), bom=codecs.BOM_UTF8)
    with open_csv(path) as source:
        assert source.encoding == "utf-8-sig"
        assert source.columns[0] == "身份证号"
        assert [r.values["姓名"] for r in source] == ["张三", "李四"]


def test_bom_is_stripped_even_when_utf8_is_given_explicitly(tmp_path: Path) -> None:
    path = write(tmp_path / "roll.csv", roll_text(), bom=codecs.BOM_UTF8)
    with open_csv(path, encoding="utf-8") as source:
        assert source.columns[0] == "身份证号"


@pytest.mark.parametrize("given", ["gb18030", "GB18030", "auto", "gbk"])
def test_gb18030_with_chinese_header_and_values(tmp_path: Path, given: str) -> None:
    path = write(tmp_path / "roll.csv", roll_text(), encoding="gb18030")
    assert b"\xd5\xc5\xc8\xfd" in path.read_bytes()  # 张三 in GB18030, so not UTF-8
    with open_csv(path, encoding=given) as source:
        assert source.encoding in ("gb18030", "gbk")
        assert source.columns == ["身份证号", "姓名", "毕业院校", "毕业年份"]
        assert [r.values["毕业院校"] for r in source] == ["常州大学", "江苏理工学院"]


def test_gb18030_only_characters_round_trip(tmp_path: Path) -> None:
    # 𠀀 (U+20000) and 㐀 exist in GB18030 but not in GBK.
    path = write(tmp_path / "rare.csv", "id,name\n1,𠀀㐀\n", encoding="gb18030")
    with open_csv(path) as source:
        assert [r.values["name"] for r in source] == ["𠀀㐀"]


def test_late_gb18030_bytes_after_an_ascii_start_name_the_line(tmp_path: Path) -> None:
    lines = ["id,name"] + [f"{i},ascii" for i in range(20_000)] + ["20000,王小明", "20001,x"]
    path = write(tmp_path / "late.csv", "\n".join(lines) + "\n", encoding="gb18030")
    assert path.stat().st_size > 64 * 1024
    source = open_csv(path)
    assert source.encoding == "utf-8"  # the first 64 KiB were plain ASCII
    with source, pytest.raises(SourceError) as info:
        for _ in source:
            pass
    assert info.value.line == 20_002
    assert "line 20002" in str(info.value)
    assert "gb18030" in str(info.value)
    assert "王" not in str(info.value)
    with open_csv(path, encoding="gb18030") as source:
        assert sum(1 for _ in source) == 20_002


def test_invalid_bytes_in_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"id,na\xffme\n1,x\n")
    with pytest.raises(SourceError) as info:
        open_csv(path, encoding="utf-8")
    assert info.value.line == 1


def test_utf16_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "unicode.txt"
    path.write_bytes("id\tname\n".encode("utf-16"))
    with pytest.raises(SourceError, match="UTF-16"):
        open_csv(path, delimiter="\t")


def test_quoted_multiline_fields_keep_line_numbers(tmp_path: Path) -> None:
    text = ('id,note\n'
            '1,"first\nsecond\nthird"\n'
            '2,plain\n'
            '3,"a ""quoted"" word, and a comma"\n'
            '4,"x\r\ny"\n')
    path = write(tmp_path / "notes.csv", text)
    rows = read_all(open_csv(path))
    assert [line for line, _ in rows] == [2, 5, 6, 7]
    assert rows[0][1]["note"] == "first\nsecond\nthird"
    assert rows[2][1]["note"] == 'a "quoted" word, and a comma'


def test_crlf_blank_and_empty_rows_are_skipped_but_counted(tmp_path: Path) -> None:
    text = "id,name\r\n1,a\r\n\r\n,\r\n  , \r\n2,b\r\n"
    rows = read_all(open_csv(write(tmp_path / "gaps.csv", text)))
    assert rows == [(2, {"id": "1", "name": "a"}), (6, {"id": "2", "name": "b"})]


def test_header_names_are_stripped_and_trailing_unnamed_columns_dropped(tmp_path: Path) -> None:
    path = write(tmp_path / "excel.csv", " id , name ,,\n1,a,,\n")
    with open_csv(path) as source:
        assert source.columns == ["id", "name"]
        assert [r.values for r in source] == [{"id": "1", "name": "a"}]


def test_data_under_an_unnamed_column_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "excel.csv", "id,name,\n1,a,\n2,b,surprise\n")
    with open_csv(path) as source, pytest.raises(SourceError) as info:
        list(source)
    assert info.value.line == 3
    assert "surprise" not in str(info.value)


@pytest.mark.parametrize("text, line", [("id,name\n1\n", 2), ("id,name\n1,a\n2,b,c\n", 3)])
def test_wrong_field_count(tmp_path: Path, text: str, line: int) -> None:
    with open_csv(write(tmp_path / "short.csv", text)) as source, \
            pytest.raises(SourceError, match=f"line {line} has") as info:
        list(source)
    assert info.value.line == line


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("\nid,name\n", "line 1 is empty"),
    ("id,name,id\n1,2,3\n", "duplicate column name 'id'"),
    ("id,,name\n", "column 2 of the header has no name"),
])
def test_header_problems(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        open_csv(write(tmp_path / "h.csv", text))


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", "id,name\n")
    with open_csv(path) as source:
        assert list(source) == []
        assert source.fingerprint() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_column_lists_the_available_ones(tmp_path: Path) -> None:
    source = open_csv(write(tmp_path / "roll.csv", roll_text()))
    with source, pytest.raises(SourceError) as info:
        read_identifiers(source, "sfzh", "cn_resident_id")
    message = str(info.value)
    assert "'sfzh' not found" in message
    assert "available columns: '身份证号', '姓名', '毕业院校', '毕业年份'" in message
    assert "11010519491231002X" not in message


def test_fingerprint_progress_and_single_pass(tmp_path: Path) -> None:
    path = write(tmp_path / "roll.csv", roll_text(), encoding="gb18030")
    source = open_csv(path)
    assert source.progress_unit == "bytes"
    assert source.progress_total == path.stat().st_size
    with pytest.raises(SourceError, match="only known after"):
        source.fingerprint()
    with source:
        list(source)
        assert source.progress_position() == source.progress_total
        assert source.fingerprint() == hashlib.sha256(path.read_bytes()).hexdigest()
        with pytest.raises(SourceError, match="only be read once"):
            iter(source)


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        open_csv(tmp_path / "missing.csv")
    with pytest.raises(SourceError, match="unsupported encoding"):
        open_csv(write(tmp_path / "a.csv", "id\n"), encoding="latin-1")
    with pytest.raises(SourceError, match="delimiter"):
        open_csv(tmp_path / "a.csv", delimiter=",,")


def test_unbalanced_quote_is_reported(tmp_path: Path) -> None:
    big_field = "x" * 200_000  # over the csv module's field size limit
    path = write(tmp_path / "q.csv", f'id,note\n1,a\n\n2,"{big_field}\n')
    with open_csv(path) as source, pytest.raises(SourceError, match="not well-formed CSV") as info:
        list(source)
    assert info.value.line == 4


def test_open_source_dispatches_on_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "roll.tsv", "id\tname\n1\t张三\n")
    assert read_all(open_source(path)) == [(2, {"id": "1", "name": "张三"})]
    with pytest.raises(SourceError, match="cannot tell"):
        open_source(tmp_path / "roll.json")


def test_large_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    rows = 200_000
    path = tmp_path / "big.csv"
    with path.open("w", encoding="gb18030", newline="") as out:
        out.write("身份证号,姓名,缴存月数\n")
        out.writelines(f"{i:018d},职工{i % 1000},{i % 120}\n" for i in range(rows))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with open_csv(path) as source:
            count = 0
            for row in source:
                count += 1
            last = row
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    assert last.line == rows + 1
    assert last.values["姓名"] == f"职工{(rows - 1) % 1000}"
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte file"
    assert size > 5 * peak
