"""Excel sources: cell-to-text conversion, row numbers, sheets, ids stored as numbers."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import openpyxl
import pytest

from adapters import InvalidRow, SourceError, ValidRow, open_source, open_xlsx, read_identifiers
from adapters.reader import INEXACT_NUMBER_REASON
from adapters.xlsx_source import cell_text


def make_workbook(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    workbook.save(path)
    return path


WORKERS = [
    ["身份证号", "姓名", "工号", "缴存月数", "登记日期", "月缴存额", "在职"],
    ["11010519491231002X", "张三", 1001, 12, dt.datetime(2024, 3, 1), 1234.5, True],
    [],
    ["320402198501011230", "李四", 1002.0, 6, dt.date(2023, 12, 31), 800, False],
    [None, None, None, None, None, None, None],
    [110105194912310000, "王五", 1003, 3, dt.datetime(2024, 1, 2, 8, 30), None, True],
]


@pytest.fixture
def workers_xlsx(tmp_path: Path) -> Path:
    return make_workbook(tmp_path / "灵活就业.xlsx", {"登记": WORKERS, "说明": [["备注"], ["x"]]})


def test_rows_values_and_excel_row_numbers(workers_xlsx: Path) -> None:
    with open_xlsx(workers_xlsx) as source:
        assert source.columns == WORKERS[0]
        assert source.progress_unit == "rows"
        rows = list(source)
        assert source.progress_position() == 6
    assert [r.line for r in rows] == [2, 4, 6]
    assert rows[0].values == {
        "身份证号": "11010519491231002X", "姓名": "张三", "工号": "1001", "缴存月数": "12",
        "登记日期": "2024-03-01", "月缴存额": "1234.5", "在职": "TRUE"}
    assert rows[1].values["工号"] == "1002"  # an integral float loses its ".0"
    assert rows[1].values["登记日期"] == "2023-12-31"
    assert rows[1].values["在职"] == "FALSE"
    assert rows[2].values["登记日期"] == "2024-01-02T08:30:00"
    assert rows[2].values["月缴存额"] == ""


def test_long_id_stored_as_a_number_is_kept_but_flagged(workers_xlsx: Path) -> None:
    with open_xlsx(workers_xlsx) as source:
        rows = list(source)
    assert rows[2].values["身份证号"] == "110105194912310000"  # what the file holds
    assert rows[2].inexact == {"身份证号"}
    assert rows[0].inexact == frozenset()


def test_reader_rejects_lossy_numeric_ids(workers_xlsx: Path) -> None:
    with open_xlsx(workers_xlsx) as source:
        results = list(read_identifiers(source, "身份证号", "cn_resident_id", ["姓名"]))
    assert results == [
        ValidRow(2, "11010519491231002X", {"姓名": "张三"}),
        ValidRow(4, "320402198501011230", {"姓名": "李四"}),
        InvalidRow(6, INEXACT_NUMBER_REASON),
    ]


def test_numeric_custom_id_column(tmp_path: Path) -> None:
    path = make_workbook(tmp_path / "ids.xlsx", {"s": [["学号", "年份"], [2024001, 2024],
                                                      [2024002.0, 2025]]})
    with open_xlsx(path) as source:
        results = list(read_identifiers(source, "学号", "custom", ["年份"]))
    assert results == [ValidRow(2, "2024001", {"年份": "2024"}),
                       ValidRow(3, "2024002", {"年份": "2025"})]


def test_sheet_by_name_and_unknown_sheet(workers_xlsx: Path) -> None:
    with open_xlsx(workers_xlsx, sheet="说明") as source:
        assert source.columns == ["备注"]
        assert source.description == "sheet '说明' of workbook '灵活就业.xlsx'"
    with pytest.raises(SourceError) as info:
        open_xlsx(workers_xlsx, sheet="Sheet1")
    assert "available sheets: '登记', '说明'" in str(info.value)


def test_header_row_below_a_title(tmp_path: Path) -> None:
    path = make_workbook(tmp_path / "t.xlsx", {"s": [["2024届毕业生名单"], ["学号", "姓名"],
                                                     ["A1", "张三"]]})
    with open_xlsx(path, header_row=2) as source:
        assert source.columns == ["学号", "姓名"]
        assert [(r.line, r.values) for r in source] == [(3, {"学号": "A1", "姓名": "张三"})]


def test_value_under_a_column_without_header(tmp_path: Path) -> None:
    path = make_workbook(tmp_path / "t.xlsx", {"s": [["id", "name"], ["1", "a"],
                                                     ["2", "b", "stray"]]})
    with open_xlsx(path) as source, pytest.raises(SourceError) as info:
        list(source)
    assert info.value.line == 3
    assert "stray" not in str(info.value)


@pytest.mark.parametrize("rows, message", [
    ([], "is empty"),
    ([[None, None], ["1", "2"]], "row 1 is empty"),
    ([["id", "id"]], "duplicate column name 'id'"),
])
def test_header_problems(tmp_path: Path, rows: list[list[object]], message: str) -> None:
    path = make_workbook(tmp_path / "t.xlsx", {"s": rows})
    with pytest.raises(SourceError, match=message):
        open_xlsx(path)


def test_fingerprint_is_the_file_hash_after_reading(workers_xlsx: Path) -> None:
    source = open_xlsx(workers_xlsx)
    with pytest.raises(SourceError):
        source.fingerprint()
    with source:
        list(source)
    assert source.fingerprint() == hashlib.sha256(workers_xlsx.read_bytes()).hexdigest()


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        open_xlsx(tmp_path / "missing.xlsx")
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(SourceError, match=r"old \.xls format"):
        open_source(tmp_path / "old.xls")
    (tmp_path / "fake.xlsx").write_text("id,name\n")
    with pytest.raises(SourceError, match="not a valid .xlsx"):
        open_xlsx(tmp_path / "fake.xlsx")


@pytest.mark.parametrize("value, text, inexact", [
    (None, "", False),
    ("  padded ", "  padded ", False),
    (42, "42", False),
    (2**60, str(2**60), False),
    (42.0, "42", False),
    (0.1, "0.1", False),
    (-3.0, "-3", False),
    (1.1010519491231e17, "110105194912310000", True),
    (True, "TRUE", False),
    (dt.date(2024, 2, 29), "2024-02-29", False),
    (dt.time(9, 5), "09:05:00", False),
])
def test_cell_text(value: object, text: str, inexact: bool) -> None:
    assert cell_text(value) == (text, inexact)
