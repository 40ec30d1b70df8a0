"""Result files: one table in four formats that agree, owner-only, complete or absent,
text kept as text in workbooks; answer words in both languages; noise bounds of means."""
from __future__ import annotations

import csv
import json
import stat

import openpyxl
import pytest

from node.jobs import results
from node.jobs.results import Words, mean_noise_bound
from node.storage import result_files as rf
from node.storage.result_files import ResultFormatError, ResultInfo, ResultTable, write_result

COLUMNS = ["行号", "申请编号", "身份证号", "结果", "人数"]
ROWS = [[2, "A1", "11010519491231002X", "是", 12], [3, "=HYPERLINK(\"x\")", "110105194912310021", "否", None],
        [4, "A3", "", "无效", 0]]
INFO = ResultInfo({"query_id": "q-1", "ledger_index": 7, "predicate": "缴费月数 >= 6",
                   "queries": [{"source": "hrss.flexible_workers", "query_id": "q-1", "ledger_index": 7}]},
                  {"query_id": "查询编号", "ledger_index": "账本位置"}, "查询信息")


def _table():
    return ResultTable(COLUMNS, iter(ROWS), "结果")


def _csv(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("ext", rf.FORMATS)
def test_each_format_holds_the_table_and_its_query(tmp_path, ext):
    path = tmp_path / f"result{ext}"
    assert write_result(path, _table(), INFO) == 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    if ext == ".json":
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert doc["query"]["query_id"] == "q-1" and doc["query"]["ledger_index"] == 7
        assert doc["columns"] == COLUMNS and doc["rows"][1]["申请编号"] == ROWS[1][1]
        assert [r["人数"] for r in doc["rows"]] == [12, None, 0]
    if ext in (".csv", ".jsonl"):
        meta = rf.sidecar(path)
        assert meta.name == f"result{ext}.meta.json" and stat.S_IMODE(meta.stat().st_mode) == 0o600
        facts = json.loads(meta.read_text(encoding="utf-8"))
        assert facts["query_id"] == "q-1" and facts["ledger_index"] == 7 and facts["columns"] == COLUMNS
    if ext == ".jsonl":
        lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
        assert [list(x) for x in lines] == [COLUMNS] * 3 and lines[0]["身份证号"] == ROWS[0][2]
    assert not list(tmp_path.glob(".*partial"))


def test_the_workbook_equals_the_csv_and_keeps_text_as_text(tmp_path):
    write_result(tmp_path / "r.csv", _table(), INFO)
    write_result(tmp_path / "r.xlsx", _table(), INFO)
    wb = openpyxl.load_workbook(tmp_path / "r.xlsx")
    assert wb.sheetnames == ["结果", "查询信息"]
    sheet = [["" if v is None else str(v) for v in row] for row in wb["结果"].iter_rows(values_only=True)]
    assert sheet == _csv(tmp_path / "r.csv")
    cells = list(wb["结果"].iter_rows(min_row=2))
    assert cells[1][1].data_type == "s" and cells[1][1].value.startswith("=")  # not a formula
    assert cells[0][2].data_type == "s"  # an identifier never becomes a number
    assert cells[0][4].data_type == "n"  # a figure is a number
    facts = {r[0]: r[1] for r in wb["查询信息"].iter_rows(values_only=True) if r[0]}
    assert facts["查询编号"] == "q-1" and facts["账本位置"] == 7 and facts["predicate"] == "缴费月数 >= 6"


def test_a_failed_write_leaves_nothing_and_an_old_result_intact(tmp_path):
    path = tmp_path / "r.xlsx"
    write_result(path, _table(), INFO)
    before = path.read_bytes()

    def broken():
        yield ROWS[0]
        raise RuntimeError("the query's answers ended early")
    for target in (path, tmp_path / "new.csv"):
        with pytest.raises(RuntimeError):
            write_result(target, ResultTable(COLUMNS, broken()), INFO)
    assert path.read_bytes() == before and not (tmp_path / "new.csv").exists()
    from openpyxl.worksheet._writer import ALL_TEMP_FILES
    assert ALL_TEMP_FILES == []  # openpyxl's stream of the rows is gone too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.xlsx"]


def test_the_extension_names_the_format_and_a_workbook_has_a_row_limit(tmp_path, monkeypatch):
    with pytest.raises(ResultFormatError, match=r"\.csv, \.xlsx, \.json, \.jsonl"):
        rf.result_format(tmp_path / "result.txt")
    monkeypatch.setattr(rf, "XLSX_MAX_ROWS", 3)
    with pytest.raises(ResultFormatError, match="write .csv or .jsonl"):
        write_result(tmp_path / "big.xlsx", _table(), INFO)
    assert not (tmp_path / "big.xlsx").exists()


def test_an_empty_table_is_still_a_file_with_its_headers(tmp_path):
    for ext in rf.FORMATS:
        write_result(tmp_path / f"e{ext}", ResultTable(COLUMNS, []), INFO)
    assert _csv(tmp_path / "e.csv") == [COLUMNS]
    assert json.loads((tmp_path / "e.json").read_text())["rows"] == []
    assert (tmp_path / "e.jsonl").read_text() == ""
    assert [list(r) for r in openpyxl.load_workbook(tmp_path / "e.xlsx")["results"].iter_rows(
        values_only=True)] == [COLUMNS]


def test_both_languages_name_every_word():
    zh, en = Words("zh"), Words("en")
    for key in results._WORDS:
        assert zh[key] and en[key] and (zh[key] != en[key] or key == "all")
    assert (zh["answer"], zh["yes"], zh["no"], zh["invalid"]) == ("结果", "是", "否", "无效")
    assert (en["answer"], en["yes"], en["no"], en["invalid"]) == ("answer", "yes", "no", "invalid")
    assert zh.info({"query_id": "q"}).labels == {"query_id": "查询编号"}
    assert en.info({"query_id": "q"}).labels == {} and en.info({}).sheet == "query"


def test_rejected_rows_keep_every_column_but_the_identifier(tmp_path):
    rejected = [results.Rejected(3, {"申请编号": "A2", "身份证号": "1101", "姓名": "张三"}, "wrong length")]
    results.write_rejects(tmp_path / "rej.csv", Words("zh"), ["申请编号", "身份证号", "姓名"], "身份证号",
                          rejected, {"query_id": "q"})
    assert _csv(tmp_path / "rej.csv") == [["行号", "申请编号", "姓名", "原因"],
                                          ["3", "A2", "张三", "wrong length"]]
    assert "1101" not in (tmp_path / "rej.csv").read_text(encoding="utf-8-sig")


def test_the_mean_noise_bound_covers_every_true_mean_in_the_figures_bounds():
    count, total, bc, bs = 40, 1_000, 3, 50
    bound = mean_noise_bound(count, total, bc, bs)
    worst = max(abs(s / c - total / count) for s in range(total - bs, total + bs + 1)
                for c in range(count - bc, count + bc + 1))
    assert worst <= bound < worst + 0.01
    assert mean_noise_bound(10, 100, 0, 0) == 0.0
    assert mean_noise_bound(3, 30, 3, 10) is None  # the count may be zero: no bound
    assert mean_noise_bound(None, None, 3, 10) is None


def test_a_header_name_used_twice_is_numbered_in_every_format(tmp_path):
    table = lambda: ResultTable(["行号", "结果", "结果"], [[2, "mine", "是"]])  # noqa: E731
    write_result(tmp_path / "d.csv", table(), INFO)
    write_result(tmp_path / "d.json", table(), INFO)
    assert _csv(tmp_path / "d.csv")[0] == ["行号", "结果", "结果_2"]
    assert json.loads((tmp_path / "d.json").read_text())["rows"] == [{"行号": 2, "结果": "mine", "结果_2": "是"}]
