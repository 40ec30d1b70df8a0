"""How much a source may expand to: bounds that keep a hostile or broken file from
exhausting the node's memory or disk before it is refused.

A 200 KB .xlsx can hold a 200 MB worksheet (XML compresses a thousandfold when it is
one repeated pattern), and a CSV "line" can be a gigabyte without a newline. Each bound
is checked as early as the format allows: a workbook's zip directory is checked before
anything is decompressed, and the decompressed stream is checked again while it flows
(a directory can lie), so memory stays bounded whatever the file says about itself.

The defaults fit every genuine spreadsheet: Excel itself stops at 1,048,576 rows and
32,767 characters per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReadLimits", "DEFAULT_LIMITS"]

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """Bounds on what a source may expand to (all sizes in bytes unless named otherwise).

    Attributes:
        max_expanded_bytes: a workbook's members, decompressed, in total.
        max_member_ratio: decompressed / compressed size of any workbook member larger
            than ``ratio_floor_bytes`` (ordinary worksheets compress 5-30x).
        ratio_floor_bytes: members smaller than this are not ratio-checked.
        max_part_bytes: any workbook part other than a worksheet (shared strings,
            styles, the workbook itself): the reader holds these in memory whole.
        max_rows: rows of a worksheet (Excel's own limit by default).
        max_cell_chars: characters of one cell (Excel's own limit by default).
        max_line_chars: characters of one physical CSV line.
    """

    max_expanded_bytes: int = 1024 * MiB
    max_member_ratio: int = 100
    ratio_floor_bytes: int = 8 * MiB
    max_part_bytes: int = 256 * MiB
    max_rows: int = 1_048_576
    max_cell_chars: int = 32_767
    max_line_chars: int = 1 * MiB

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be 1 or more")


DEFAULT_LIMITS = ReadLimits()
