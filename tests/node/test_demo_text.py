"""The demo's words: at most 80 terminal cells a line, results kept in a folder it names."""
from __future__ import annotations

from rich.cells import cell_len
from rich.console import Console

from node.devtools.demo import WIDTH, _field, _wrap, default_workdir


def test_lines_fit_80_cells_with_chinese_names_and_long_file_names():
    text = ("edu, the education bureau (教育局) and 人力资源和社会保障局: dataset graduates, "
            "result-flexible_workers.rejected.csv and more words " * 4)
    console = Console(width=200, record=True)
    _field(console, "asked of", text)
    lines = console.export_text().splitlines()
    assert len(lines) > 3 and all(cell_len(line) <= WIDTH for line in lines)
    assert any("result-flexible_workers.rejected.csv" in line for line in lines)  # never broken
    assert _wrap("a" * 100, 80) == ["a" * 100]  # a word longer than a line stays whole


def test_the_results_go_to_a_fresh_folder_never_over_an_earlier_run(tmp_path):
    base = tmp_path / "demo-run"
    assert default_workdir(base) == base
    base.mkdir()
    assert default_workdir(base) == base  # empty: used
    (base / "result-graduates.csv").write_text("kept")
    assert default_workdir(base) == tmp_path / "demo-run-2"
    (tmp_path / "demo-run-2").mkdir()
    (tmp_path / "demo-run-2" / "x").write_text("kept")
    assert default_workdir(base) == tmp_path / "demo-run-3"
    assert (base / "result-graduates.csv").read_text() == "kept"
