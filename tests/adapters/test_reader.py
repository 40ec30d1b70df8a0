"""read_identifiers: every row accounted for, duplicates caught, no values in messages."""

from __future__ import annotations

import ast
import random
from datetime import date
from pathlib import Path

import pytest

import adapters
from adapters import (
    IdType,
    InvalidRow,
    SourceError,
    ValidRow,
    open_csv,
    read_identifiers,
    synthetic_resident_id,
)

BAD_IDS = [
    "110105194912310021",  # bad check digit
    "110105199002301234",  # 30 February
    "11010519491231002A",
    "1101051949123100",
    "320402000229123",
    "１１０１０５１９４９１２３１００２１",
    "010105194912310025",
]


def csv_file(tmp_path: Path, header: str, lines: list[str]) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_valid_invalid_and_duplicates_in_source_order(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "身份证号,姓名,缴存月数", [
        "11010519491231002X,张三,12",
        "110105194912310021,李四,6",
        ",无证,1",
        "１１０１０５１９４９１２３１００２ｘ,张三（重复）,12",
        "110105491231002,张三（旧号）,12",
        "320402198501011230,王五,7",
    ])
    with open_csv(path) as source:
        results = list(read_identifiers(source, "身份证号", IdType.CN_RESIDENT_ID,
                                        ["缴存月数"], today=date(2025, 1, 1)))
    assert results == [
        ValidRow(2, "11010519491231002X", {"缴存月数": "12"}),
        InvalidRow(3, "bad check digit"),
        InvalidRow(4, "empty"),
        InvalidRow(5, "duplicate identifier (first seen on line 2)"),
        InvalidRow(6, "duplicate identifier (first seen on line 2)"),
        ValidRow(7, "320402198501011230", {"缴存月数": "7"}),
    ]


def test_today_is_passed_through(tmp_path: Path) -> None:
    born_2024 = "320402202401011232"
    for today, expected in [(date(2023, 12, 31), InvalidRow(2, "invalid birth date")),
                            (date(2024, 1, 1), ValidRow(2, born_2024, {}))]:
        with open_csv(csv_file(tmp_path, "id", [born_2024])) as source:
            (result,) = read_identifiers(source, "id", "cn_resident_id", today=today)
        assert result == expected


@pytest.mark.parametrize("id_column, attributes, message", [
    ("sfzh", (), "identifier column 'sfzh' not found; available columns: '身份证号', '姓名'"),
    ("身份证号", ("姓名", "年龄"), "attribute column '年龄' not found; available columns"),
    ("身份证号", ("身份证号",), "cannot also be an attribute"),
    ("身份证号", ("姓名", "姓名"), "listed twice"),
])
def test_column_problems_raise_before_any_row(tmp_path: Path, id_column: str,
                                              attributes: tuple[str, ...], message: str) -> None:
    path = csv_file(tmp_path, "身份证号,姓名", ["11010519491231002X,张三"])
    with open_csv(path) as source:
        with pytest.raises(SourceError, match=message):
            read_identifiers(source, id_column, "cn_resident_id", attributes)
        assert [row.line for row in source] == [2]  # nothing was consumed


def test_reasons_and_errors_never_contain_values(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "身份证号,姓名", [f"{bad},某人" for bad in BAD_IDS]
                    + ["11010519491231002X,甲", "11010519491231002X,乙"])
    with open_csv(path) as source:
        results = list(read_identifiers(source, "身份证号", "cn_resident_id", ["姓名"]))
    invalid = [r for r in results if isinstance(r, InvalidRow)]
    assert len(invalid) == len(BAD_IDS) + 1
    for row in invalid:
        for bad in BAD_IDS + ["11010519491231002X"]:
            assert bad not in row.reason
            assert not any(bad[i:i + 6] in row.reason for i in range(len(bad) - 5))


def test_many_rows_with_synthetic_ids(tmp_path: Path) -> None:
    rng = random.Random(11)
    ids = list(dict.fromkeys(synthetic_resident_id(rng) for _ in range(5_000)))
    path = csv_file(tmp_path, "id,n", [f"{v},{i}" for i, v in enumerate(ids)] + [f"{ids[7]},dup"])
    with open_csv(path) as source:
        results = list(read_identifiers(source, "id", "cn_resident_id", ["n"]))
        assert source.fingerprint()
    assert [r.normalised_id for r in results[:-1]] == ids
    assert results[-1] == InvalidRow(len(ids) + 2, "duplicate identifier (first seen on line 9)")


def test_adapters_never_import_node_or_protocols() -> None:
    package = Path(adapters.__file__).parent
    for module in package.rglob("*.py"):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("node", "protocols"), (module.name, name)
