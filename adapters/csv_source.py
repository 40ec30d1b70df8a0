"""CSV files, streamed with bounded memory, in the encodings Chinese offices produce.

Excel in China saves "CSV (逗号分隔)" in GB18030/GBK and "CSV UTF-8" with a BOM; other
tools write plain UTF-8. ``encoding="auto"`` picks among these from the first 64 KiB.
If a later part of the file turns out not to decode, the error names the line and the
encoding to use instead: nothing is guessed twice, and no byte is silently replaced.

The file is read once: the SHA-256 fingerprint is computed over the raw bytes as they
stream through the parser.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

from adapters.base import Row, Source, SourceError, check_header, open_file
from adapters.headers import show_column
from adapters.limits import DEFAULT_LIMITS, ReadLimits

__all__ = ["CsvSource", "open_csv", "SUPPORTED_ENCODINGS"]

SUPPORTED_ENCODINGS = ("auto", "utf-8", "utf-8-sig", "gb18030", "gbk")
_SNIFF_BYTES = 64 * 1024
_BUFFER_BYTES = 64 * 1024
# Undecodable bytes come through the "surrogateescape" handler as U+DC80..U+DCFF; a
# correctly decoded text can never hold these, so finding one pinpoints the bad line.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
# Line breaks as the csv module counts them (the text layer keeps them with newline="").
_LINE_BREAK = re.compile("\r\n|\r|\n")
_HINT = {
    "utf-8": "if it was saved by Excel in China it is probably GB18030: "
             "open it with encoding='gb18030' (CLI: --encoding gb18030)",
    "gb18030": "check the file's encoding; if it is UTF-8 open it with encoding='utf-8'",
    "gbk": "try encoding='gb18030', a superset of GBK",
}


class _HashingReader(io.RawIOBase):
    """Raw byte stream that hashes and counts everything read through it."""

    def __init__(self, raw: io.FileIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.position += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _detect_encoding(head: bytes, whole_file: bool) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise SourceError("the file is UTF-16 (Excel's 'Unicode text'); save it as "
                          "'CSV UTF-8' or 'CSV' instead")
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=whole_file)
    except UnicodeDecodeError:
        return "gb18030"
    return "utf-8"


def _canonical_encoding(encoding: str) -> str:
    if encoding == "auto":
        return encoding
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        name = ""
    if name not in SUPPORTED_ENCODINGS:
        raise SourceError(f"unsupported encoding {encoding!r}; use one of "
                          f"{', '.join(SUPPORTED_ENCODINGS)}")
    return name


class CsvSource(Source):
    """A CSV file; see :func:`open_csv`."""

    progress_unit = "bytes"

    def __init__(self, path: Path, encoding: str, delimiter: str,
                 limits: ReadLimits = DEFAULT_LIMITS) -> None:
        where = f"CSV file '{path.name}'"
        self._max_line = limits.max_line_chars
        encoding = _canonical_encoding(encoding)
        raw = open_file(path, where, "a CSV file", lambda p: io.FileIO(p, "r"))
        try:
            size = os.fstat(raw.fileno()).st_size
            if encoding == "auto":
                head = raw.read(_SNIFF_BYTES) or b""
                raw.seek(0)
                encoding = _detect_encoding(head, whole_file=len(head) >= size)
            self._hashing = _HashingReader(raw)
            self._text = io.TextIOWrapper(
                io.BufferedReader(self._hashing, _BUFFER_BYTES),
                encoding=encoding, errors="surrogateescape", newline="")
            self._lines_read = 0
            self._reader = csv.reader(self._bounded_lines(), delimiter=delimiter)
            self.encoding = encoding
            self._where = where
            columns = self._read_header()
        except SourceError as exc:
            raw.close()
            if not str(exc).startswith(where):
                raise SourceError(f"{where}: {exc}", line=exc.line) from None
            raise
        except BaseException:
            raw.close()
            raise
        super().__init__(where, columns, size)

    def _bounded_lines(self) -> Iterator[str]:
        """Physical lines, each refused beyond `max_line_chars` before it is held whole."""
        limit = self._max_line
        while line := self._text.readline(limit + 1):
            self._lines_read += 1
            if len(line) > limit and not line.endswith(("\n", "\r")):
                raise SourceError(f"{self._where}: line {self._lines_read} is longer than {limit} "
                                  "characters; is this really a CSV file?", line=self._lines_read)
            yield line

    def _bad_bytes_line(self, fields: list[str], first_line: int) -> int:
        """The physical line of the first undecodable byte in a record starting at `first_line`."""
        before = 0
        for field in fields:
            found = _ESCAPED_BYTE.search(field)
            if found:
                return first_line + before + len(_LINE_BREAK.findall(field, 0, found.start()))
            before += len(_LINE_BREAK.findall(field))
        return first_line

    def _decode_error(self, line: int) -> SourceError:
        label = "UTF-8" if self.encoding.startswith("utf-8") else self.encoding.upper()
        hint = _HINT.get(self.encoding.removesuffix("-sig"), "")
        return SourceError(f"{self._where}: line {line} is not valid {label}; {hint}",
                           line=line)

    def _next_record(self) -> list[str] | None:
        start = self._reader.line_num + 1
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            # csv's own message never quotes field contents.
            raise SourceError(f"{self._where}: the record starting on line {start} is not "
                              f"well-formed CSV ({exc}); check for an unbalanced quote",
                              line=start) from None

    def _read_header(self) -> list[str]:
        fields = self._next_record()
        if fields is None:
            raise SourceError("the file is empty; the first line must hold the column names")
        if any(_ESCAPED_BYTE.search(name) for name in fields):
            raise self._decode_error(self._bad_bytes_line(fields, 1))
        if not fields:
            raise SourceError("line 1 is empty; the first line must hold the column names",
                              line=1)
        fields[0] = fields[0].removeprefix("\ufeff")
        return check_header([name.strip() for name in fields], self._where)

    def _rows(self) -> Iterator[Row]:
        columns = self.columns
        width = len(columns)
        escaped = _ESCAPED_BYTE.search
        line = self._reader.line_num
        while (fields := self._next_record()) is not None:
            first_line, line = line + 1, self._reader.line_num
            joined = "".join(fields)
            if not joined or joined.isspace():  # a blank line, or only delimiters
                continue
            if escaped(joined):
                raise self._decode_error(self._bad_bytes_line(fields, first_line))
            if "\x00" in joined:
                position = next(i for i, f in enumerate(fields) if "\x00" in f)
                where = show_column(columns, position) if position < width else f"column {position + 1}"
                raise SourceError(
                    f"{self._where}: line {first_line}, {where} holds a NUL byte, which text "
                    "never does; the file may be binary or UTF-16: save it as 'CSV UTF-8'",
                    line=first_line)
            if len(fields) != width:
                if len(fields) < width or any(fields[width:]):
                    raise SourceError(
                        f"{self._where}: line {first_line} has {len(fields)} fields but the "
                        f"header has {width} columns", line=first_line)
                fields = fields[:width]
            yield Row(first_line, dict(zip(columns, fields)))

    def _digest(self) -> str:
        return self._hashing.sha256.hexdigest()

    def _release(self) -> None:
        self._text.close()

    def progress_position(self) -> int:
        return self._hashing.position


def open_csv(path: str | os.PathLike[str], encoding: str = "auto",
             delimiter: str = ",", *, limits: ReadLimits = DEFAULT_LIMITS) -> CsvSource:
    """Open a CSV file whose first line is the header.

    Args:
        path: the file.
        encoding: "auto" (BOM -> utf-8-sig; else UTF-8 if the first 64 KiB decode as
            UTF-8; else GB18030), or one of "utf-8", "utf-8-sig", "gb18030", "gbk".
        delimiter: the field separator, e.g. "," or "\\t".
        limits: ``max_line_chars`` bounds one physical line (cells are bounded by the
            csv module's field limit).

    Raises:
        SourceError: missing file, unsupported encoding, empty file, header without
            names or with duplicates. While iterating: undecodable line (with the line
            number and the encoding to try), malformed quoting, wrong field count,
            an over-long line, a NUL byte.

    Blank lines and rows whose fields are all empty or blank are skipped; line numbers
    still count them. Header names are stripped of surrounding spaces and of a BOM.
    """
    if len(delimiter) != 1:
        raise SourceError("the delimiter must be a single character")
    return CsvSource(Path(path), encoding, delimiter, limits)
