"""Decompression bombs and over-long input: refused early, with bounded memory.

Each bomb is built here, in the test, from a real openpyxl workbook whose worksheet part
is swapped for a huge repetitive one. Memory is measured on a child process that opens
the file (the child reports its own peak RSS, VmHWM): a correctness bound, not a timing.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import openpyxl
import pytest

from adapters import SourceError, open_csv, open_xlsx
from adapters.limits import ReadLimits

ROOT = Path(__file__).resolve().parents[2]
SHEET = "xl/worksheets/sheet1.xml"
RSS_BOUND_MB = 300


def _workbook_with_sheet(path: Path, write_sheet_data) -> Path:
    """A genuine workbook whose sheet's <sheetData> is produced by `write_sheet_data(f)`."""
    base = path.with_suffix(".base.xlsx")
    wb = openpyxl.Workbook()
    wb.active.append(["身份证号", "姓名"])
    wb.save(base)
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename != SHEET:
                out.writestr(info, data)
                continue
            head, rest = data.split(b"<sheetData>", 1)
            tail = rest.split(b"</sheetData>", 1)[1]
            with out.open(SHEET, "w") as f:
                f.write(head + b"<sheetData>")
                write_sheet_data(f)
                f.write(b"</sheetData>" + tail)
    return path


def _many_rows(total_bytes: int):
    row = b'<row><c t="inlineStr"><is><t>x</t></is></c></row>'
    block = row * 20_000

    def write(f):
        for _ in range(total_bytes // len(block)):
            f.write(block)
    return write


def _one_huge_cell(chars: int):
    def write(f):
        f.write(b'<row r="1"><c r="A1" t="inlineStr"><is><t>')
        block = b"x" * (1 << 20)
        for _ in range(chars // len(block)):
            f.write(block)
        f.write(b"</t></is></c></row>")
    return write


def _open_in_child(path: Path, limits: str = "") -> tuple[str, int]:
    """Open and read `path` in a child process; return (its output, its peak RSS in MB).

    The peak is the child's own VmHWM, read by the child after the work: the rusage of a
    child counts the high-water mark of the process it was forked from too (the kernel
    carries it across exec), so a big test worker would be blamed on the reader.
    """
    script = textwrap.dedent(f"""
        from adapters import SourceError, open_xlsx
        from adapters.limits import ReadLimits
        try:
            with open_xlsx({str(path)!r}, limits=ReadLimits({limits})) as source:
                for _ in source:
                    pass
            print("READ")
        except SourceError as exc:
            print("REFUSED", exc)
        with open("/proc/self/status") as status:
            print([line.split()[1] for line in status if line.startswith("VmHWM:")][0])
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.returncode == 0, child.stdout + child.stderr
    output, peak_kib = child.stdout.rstrip("\n").rsplit("\n", 1)
    return output + "\n" + child.stderr, int(peak_kib) / 1024


def test_xlsx_bomb_refused_from_zip_directory_with_small_memory(tmp_path):
    bomb = _workbook_with_sheet(tmp_path / "bomb.xlsx", _many_rows(200 << 20))
    assert bomb.stat().st_size < 2 << 20  # a small file ...
    output, rss = _open_in_child(bomb)
    assert output.startswith("REFUSED") and "compressed more than" in output, output
    assert "Traceback" not in output
    assert rss < RSS_BOUND_MB, f"peak RSS {rss:.0f} MB"


def test_xlsx_huge_cell_refused_while_streaming_with_small_memory(tmp_path):
    # The directory checks are relaxed so that only the streaming check can stop it.
    bomb = _workbook_with_sheet(tmp_path / "cell.xlsx", _one_huge_cell(150 << 20))
    output, rss = _open_in_child(bomb, "max_member_ratio=10**9")
    assert output.startswith("REFUSED") and "longer than 32767 characters" in output, output
    assert rss < RSS_BOUND_MB, f"peak RSS {rss:.0f} MB"


def test_xlsx_lying_directory_refused(tmp_path):
    """A directory that understates the sheet's size cannot smuggle more past the check."""
    path = _workbook_with_sheet(tmp_path / "liar.xlsx", _many_rows(4 << 20))
    data = bytearray(path.read_bytes())
    name = SHEET.encode()
    at = data.find(b"PK\x01\x02")
    while at >= 0:  # central directory entries: uncompressed size at offset 24
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + name_len] == name:
            struct.pack_into("<I", data, at + 24, 1000)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as z:
        assert z.getinfo(SHEET).file_size == 1000  # the directory now lies
    with pytest.raises(SourceError, match="damaged"):
        open_xlsx(path)


def test_xlsx_expanded_total_bounded(tmp_path):
    path = _workbook_with_sheet(tmp_path / "big.xlsx", _many_rows(3 << 20))
    with pytest.raises(SourceError, match="expands to"):
        open_xlsx(path, limits=ReadLimits(max_expanded_bytes=1 << 20))


def test_xlsx_row_count_bounded(tmp_path):
    path = tmp_path / "rows.xlsx"
    wb = openpyxl.Workbook()
    wb.active.append(["身份证号"])
    for i in range(30):
        wb.active.append([f"r{i}"])
    wb.save(path)
    with pytest.raises(SourceError, match="more than 20 rows") as exc:
        with open_xlsx(path, limits=ReadLimits(max_rows=20)) as source:
            list(source)
    assert exc.value.line == 21


def test_csv_line_without_newline_refused(tmp_path):
    path = tmp_path / "one-line.csv"
    with open(path, "wb") as f:
        f.write("身份证号,姓名\n".encode())
        f.write(b"1," + b"y" * (3 << 20))  # one 3 MB line, no newline
    with pytest.raises(SourceError, match="line 2 is longer than") as exc:
        with open_csv(path) as source:
            list(source)
    assert exc.value.line == 2


def test_node_config_sets_the_bounds(tmp_path):
    from node.core.config import NodeConfig
    cfg = NodeConfig.model_validate({
        "node": {"id": "hrss"}, "tls": {"ca": "ca.pem", "cert": "c.pem", "key": "k.pem"},
        "sources": {"max_rows": 20, "max_expanded_mib": 2}})
    limits = cfg.sources.limits()
    assert limits.max_rows == 20 and limits.max_expanded_bytes == 2 << 20
    path = _workbook_with_sheet(tmp_path / "big.xlsx", _many_rows(3 << 20))
    with pytest.raises(SourceError, match="expands to"):
        open_xlsx(path, limits=limits)
