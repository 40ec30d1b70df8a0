"""Check a workbook's container before openpyxl parses it: no bombs, no damaged parts.

Two passes, both with bounded memory:
1. the zip directory: the declared decompressed sizes in total, per part and as a
   compression ratio — refused before a byte is decompressed;
2. the parts the reader parses (worksheets, shared strings), decompressed as a stream
   in 1 MiB chunks: the real size, and the longest stretch between two XML tags (a
   cell's text or one tag), which bounds what the XML parser must hold at once. A
   directory that understates a size is caught here too (the stream ends in a CRC
   error), as is a damaged compressed stream.
"""

from __future__ import annotations

import zipfile
import zlib
from typing import BinaryIO

from adapters.base import SourceError
from adapters.limits import ReadLimits

__all__ = ["check_workbook"]

_CHUNK = 1 << 20
# UTF-8 takes up to 4 bytes a character and XML escapes up to 6 ("&quot;"); a cell's
# element also carries its tags and attributes.
_BYTES_PER_CHAR = 6
_TAG_ALLOWANCE = 4096

_DAMAGED = ("is damaged or is not a valid .xlsx file; open it in Excel or LibreOffice and "
            "save it again as .xlsx")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def _parsed_in_streams(name: str) -> bool:
    lower = name.lower()
    return lower.startswith("xl/worksheets/") and lower.endswith(".xml")


def _check_directory(archive: zipfile.ZipFile, where: str, limits: ReadLimits) -> None:
    infos = archive.infolist()
    total = sum(i.file_size for i in infos)
    if total > limits.max_expanded_bytes:
        raise SourceError(f"{where} expands to {_mib(total)} when unpacked, more than the "
                          f"{_mib(limits.max_expanded_bytes)} allowed; split it into smaller files")
    for info in infos:
        if (info.file_size > limits.ratio_floor_bytes
                and info.file_size > limits.max_member_ratio * max(info.compress_size, 1)):
            raise SourceError(
                f"{where} is refused: one of its parts is compressed more than "
                f"{limits.max_member_ratio}:1 ({_mib(info.file_size)} from "
                f"{info.compress_size} bytes), which genuine spreadsheets never are")
        if not _parsed_in_streams(info.filename) and info.file_size > limits.max_part_bytes:
            raise SourceError(
                f"{where} is refused: a part read whole ({info.filename.rsplit('/', 1)[-1]}) "
                f"is {_mib(info.file_size)}, more than the {_mib(limits.max_part_bytes)} allowed")


def _scan_part(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str,
               limits: ReadLimits, budget: int) -> int:
    """Stream one part; return its real size. Raises SourceError past a bound."""
    longest_allowed = limits.max_cell_chars * _BYTES_PER_CHAR + _TAG_ALLOWANCE
    size = 0
    run = 0  # bytes since the last '<'
    with archive.open(info) as stream:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > budget:
                raise SourceError(f"{where} expands beyond the {_mib(limits.max_expanded_bytes)} "
                                  "allowed when unpacked; split it into smaller files")
            first = chunk.find(b"<")
            if first < 0:
                run += len(chunk)
            else:
                run += first
                if run > longest_allowed:
                    break
                last = chunk.rfind(b"<")
                if last > first:
                    run = max(len(piece) for piece in chunk[first + 1:last].split(b"<"))
                    if run > longest_allowed:
                        break
                run = len(chunk) - last
            if run > longest_allowed:
                break
    if run > longest_allowed:
        raise SourceError(f"{where} holds a cell (or an XML element) longer than "
                          f"{limits.max_cell_chars} characters, the most a spreadsheet cell holds")
    return size


def check_workbook(handle: BinaryIO, where: str, limits: ReadLimits) -> None:
    """Refuse a workbook that would expand beyond `limits` or is damaged; rewinds `handle`.

    Raises:
        SourceError: a bound is exceeded, or the container is not a readable zip.
    """
    try:
        with zipfile.ZipFile(handle) as archive:
            _check_directory(archive, where, limits)
            budget = limits.max_expanded_bytes
            for info in archive.infolist():
                lower = info.filename.lower()
                if _parsed_in_streams(lower) or lower.endswith("sharedstrings.xml"):
                    budget -= _scan_part(archive, info, where, limits, budget)
    except SourceError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError,
            NotImplementedError, OSError, KeyError):
        raise SourceError(f"{where} {_DAMAGED}") from None
    finally:
        handle.seek(0)
