"""Identifier validation and normalisation: GB 11643 resident ids, GB 32100 USCC, phones."""

from __future__ import annotations

import random
import unicodedata
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.identifiers import (
    IdType,
    InvalidIdentifier,
    encode,
    normalise,
    synthetic_resident_id,
    synthetic_uscc,
)

TODAY = date(2025, 6, 1)
RID = IdType.CN_RESIDENT_ID


def reference_check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 written from the standard's definition (weights 2**(i) mod 11),
    independently of the table in the code under test."""
    total = sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(first17))
    value = (12 - total % 11) % 11
    return "X" if value == 10 else str(value)


def with_check(first17: str) -> str:
    return first17 + reference_check_char(first17)


def rid(raw: str) -> str:
    return normalise(RID, raw, today=TODAY)


def rid_reason(raw: str) -> str:
    with pytest.raises(InvalidIdentifier) as info:
        rid(raw)
    return info.value.reason


# -- resident id -----------------------------------------------------------------------

def test_reference_check_char_matches_the_standard_example() -> None:
    # GB 11643-1999's own example: 11010519491231002X.
    assert reference_check_char("11010519491231002") == "X"


@pytest.mark.parametrize("raw", [
    "11010519491231002X",
    "11010519491231002x",
    "  11010519491231002X\t\n",
    "\u300011010519491231002X\u3000",  # ideographic spaces around
    "１１０１０５１９４９１２３１００２Ｘ",  # full-width digits and X
    "１１０１０５１９４９１２３１００２ｘ",
    "110105491231002",  # 15-digit legacy form of the same person
    " １１０１０５４９１２３１００２ ",
])
def test_resident_id_presentations_normalise_to_the_same_id(raw: str) -> None:
    assert rid(raw) == "11010519491231002X"


def test_legacy_conversion_computes_the_check_digit() -> None:
    legacy = "320402850101123"
    converted = rid(legacy)
    assert converted == with_check("32040219850101123")
    assert len(converted) == 18


def test_legacy_feb_29_depends_on_the_19yy_leap_year() -> None:
    assert rid("320402960229123") == with_check("32040219960229123")
    assert rid_reason("320402000229123") == "invalid birth date"  # 1900 is not a leap year


@pytest.mark.parametrize("birth", ["19900230", "19900231", "19901301", "19900001", "19900100"])
def test_impossible_calendar_dates(birth: str) -> None:
    assert rid_reason(with_check(f"320402{birth}123")) == "invalid birth date"


def test_birth_date_bounds() -> None:
    assert rid(with_check("32040219000101123")).startswith("320402190001")
    assert rid_reason(with_check("32040218991231123")) == "invalid birth date"
    assert rid(with_check("320402" + TODAY.strftime("%Y%m%d") + "123"))
    assert rid_reason(with_check("32040220250602123")) == "invalid birth date"  # tomorrow


def test_today_defaults_to_the_real_date() -> None:
    assert normalise(RID, "11010519491231002X") == "11010519491231002X"
    assert normalise("cn_resident_id", "11010519491231002X") == "11010519491231002X"


@pytest.mark.parametrize("raw", ["110105194912310021", "11010519491231002Y"[:17] + "0"])
def test_bad_check_digit(raw: str) -> None:
    assert rid_reason(raw) == "bad check digit"


def test_region_code_must_not_start_with_zero() -> None:
    assert rid_reason(with_check("01010519491231002")) == "invalid region code"


@pytest.mark.parametrize("raw", [
    "1101051949123100",  # 16
    "11010519491231002",  # 17
    "110105194912310020X",  # 19
    "1101054912310",  # 13
    "1",
])
def test_wrong_length(raw: str) -> None:
    assert rid_reason(raw) == "wrong length"


@pytest.mark.parametrize("raw", [
    "11010519491231002A",
    "1101051949123100X2",  # X anywhere but last
    "11010549123100X",  # no X in the legacy form
    "110105 19491231002X",  # internal whitespace is not "fixed"
    "110105-19491231002X",
    "abcdefghijklmnopqr",
    "١١٠١٠٥١٩٤٩١٢٣١٠٠٢X",  # Arabic-Indic digits are not ASCII after NFKC
])
def test_invalid_characters(raw: str) -> None:
    assert rid_reason(raw) == "invalid character"


@pytest.mark.parametrize("raw", ["", "   ", "\u3000", "\t\n"])
def test_empty(raw: str) -> None:
    assert rid_reason(raw) == "empty"


def test_non_str_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        normalise(RID, 11010519491231002)  # type: ignore[arg-type]


# -- unified social credit code -------------------------------------------------------

USCC = IdType.CN_USCC


def test_uscc_valid_and_case_folded() -> None:
    assert normalise(USCC, "91350100M000100Y43") == "91350100M000100Y43"
    assert normalise(USCC, " 91350100m000100y43 ") == "91350100M000100Y43"
    assert normalise(USCC, "９１３５０１００Ｍ０００１００Ｙ４３") == "91350100M000100Y43"


def test_uscc_bad_check_char() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalise(USCC, "91350100M000100Y44")
    assert info.value.reason == "bad check digit"


@pytest.mark.parametrize("letter", ["I", "O", "Z", "S", "V", "i", "o", "z", "s", "v"])
def test_uscc_forbidden_letters(letter: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalise(USCC, "91350100M000100Y43"[:8] + letter + "91350100M000100Y43"[9:])
    assert info.value.reason == "invalid character"


@pytest.mark.parametrize("raw, reason", [
    ("91350100M000100Y4", "wrong length"),
    ("91350100M000100Y431", "wrong length"),
    ("", "empty"),
    ("91350100-M000100Y43", "invalid character"),
])
def test_uscc_shape(raw: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalise(USCC, raw)
    assert info.value.reason == reason


# -- phone numbers --------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    "13800138000",
    "138 0013 8000",
    "138-0013-8000",
    "+86 138 0013 8000",
    "+86-138-0013-8000",
    "+8613800138000",
    "0086 138 0013 8000",
    "8613800138000",
    "１３８００１３８０００",
    " 13800138000 ",
])
def test_phone_formats(raw: str) -> None:
    assert normalise(IdType.PHONE_CN, raw) == "13800138000"


@pytest.mark.parametrize("raw, reason", [
    ("12800138000", "not a mainland China mobile number"),
    ("01012345678", "not a mainland China mobile number"),
    ("010-1234-5678", "not a mainland China mobile number"),
    ("+852 9123 4567", "not a mainland China mobile number"),
    ("1380013800", "wrong length"),
    ("138001380001", "wrong length"),
    ("1380013800O", "invalid character"),
    ("(138)00138000", "invalid character"),
    ("", "empty"),
    ("+86", "empty"),
])
def test_phone_rejections(raw: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalise(IdType.PHONE_CN, raw)
    assert info.value.reason == reason


# -- custom ---------------------------------------------------------------------------

def test_custom_is_nfkc_and_stripped() -> None:
    assert normalise(IdType.CUSTOM, "  Ａ１２３－ｘ ") == "A123-x"
    assert normalise(IdType.CUSTOM, "学号 2024001") == "学号 2024001"
    assert normalise(IdType.CUSTOM, "x" * 256) == "x" * 256


@pytest.mark.parametrize("raw, reason", [
    ("", "empty"),
    (" \u3000 ", "empty"),
    ("x" * 257, "too long"),
    ("a\x00b", "invalid character"),
    ("a\x1fb", "invalid character"),
    ("a\u200bb", "invalid character"),  # zero-width space
    ("a\ud800b", "invalid character"),
])
def test_custom_rejections(raw: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalise(IdType.CUSTOM, raw)
    assert info.value.reason == reason


# -- encoding and errors --------------------------------------------------------------

def test_encode_is_domain_separated() -> None:
    assert encode(RID, "11010519491231002X") == b"shuqiao/id/v1/cn_resident_id/11010519491231002X"
    assert encode("custom", "学号") == b"shuqiao/id/v1/custom/" + "学号".encode()
    assert encode(IdType.PHONE_CN, "13800138000") != encode(IdType.CUSTOM, "13800138000")


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError):
        normalise("passport", "E12345678")


def test_invalid_identifier_is_a_value_error_with_reason() -> None:
    with pytest.raises(ValueError) as info:
        rid("110105194912310021")
    assert isinstance(info.value, InvalidIdentifier)
    assert info.value.id_type is RID
    assert str(info.value) == "invalid cn_resident_id: bad check digit"


BAD_IDS = [
    (RID, "110105194912310021"),
    (RID, "11010519491231002A"),
    (RID, "110105199002301234"),
    (RID, "１１０１０５１９４９１２３１００２１"),
    (RID, "320402000229123"),
    (RID, "110105 19491231002X"),
    (RID, "1101051949123100"),
    (RID, with_check("01010519491231002")),
    (USCC, "91350100M000100Y44"),
    (USCC, "91350100M0001O0Y43"),
    (IdType.PHONE_CN, "12800138000"),
    (IdType.PHONE_CN, "+852 9123 4567"),
    (IdType.PHONE_CN, "1380013800O"),
    (IdType.CUSTOM, "张三丰\x00李四光"),
    (IdType.CUSTOM, "secret-" * 40),
]


@pytest.mark.parametrize("id_type, raw", BAD_IDS)
def test_messages_never_contain_the_identifier(id_type: IdType, raw: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalise(id_type, raw, today=TODAY)
    exc = info.value
    texts = [str(exc), repr(exc), exc.reason, *map(str, exc.args)]
    folded = unicodedata.normalize("NFKC", raw).strip()
    fragments = {folded[i:i + 4] for i in range(len(folded) - 3)} | {raw}
    for text in texts:
        leaked = [f for f in fragments if f in text]
        assert not leaked, (text, leaked)
    # Nothing else in the traceback carries the value either.
    assert exc.__cause__ is None
    assert exc.__context__ is None or raw not in str(exc.__context__)


# -- synthetic data and properties ----------------------------------------------------

seeds = st.integers(min_value=0, max_value=2**64)


@settings(max_examples=300)
@given(seeds)
def test_synthetic_resident_ids_are_canonical(seed: int) -> None:
    value = synthetic_resident_id(random.Random(seed))
    assert normalise(RID, value) == value
    assert value[17] == reference_check_char(value[:17])
    legacy = value[:6] + value[8:17]
    if value[6:8] == "19":
        assert normalise(RID, legacy) == value


@settings(max_examples=300)
@given(seeds, st.integers(min_value=0, max_value=17), st.integers(min_value=1, max_value=10))
def test_any_single_substitution_in_a_resident_id_is_detected(
    seed: int, position: int, shift: int
) -> None:
    value = synthetic_resident_id(random.Random(seed))
    alphabet = "0123456789X" if position == 17 else "0123456789"
    current = alphabet.index(value[position])
    replacement = alphabet[(current + shift) % len(alphabet)]
    if replacement == value[position]:
        return  # shift == len(alphabet) for the digit positions
    corrupted = value[:position] + replacement + value[position + 1:]
    with pytest.raises(InvalidIdentifier):
        normalise(RID, corrupted)


@settings(max_examples=200)
@given(seeds, st.integers(min_value=0, max_value=15))
def test_adjacent_transpositions_in_a_resident_id_are_detected(seed: int, position: int) -> None:
    value = synthetic_resident_id(random.Random(seed))
    a, b = value[position], value[position + 1]
    if a == b:
        return
    swapped = value[:position] + b + a + value[position + 2:]
    with pytest.raises(InvalidIdentifier):
        normalise(RID, swapped)


@settings(max_examples=300)
@given(seeds, st.integers(min_value=0, max_value=17), st.integers(min_value=1, max_value=30))
def test_uscc_synthetic_and_single_substitution(seed: int, position: int, shift: int) -> None:
    charset = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    value = synthetic_uscc(random.Random(seed))
    assert normalise(USCC, value) == value
    replacement = charset[(charset.index(value[position]) + shift) % 31]
    corrupted = value[:position] + replacement + value[position + 1:]
    with pytest.raises(InvalidIdentifier):
        normalise(USCC, corrupted)


def test_synthetic_birth_year_range_is_respected() -> None:
    rng = random.Random(7)
    years = {int(synthetic_resident_id(rng, (1998, 2002))[6:10]) for _ in range(500)}
    assert years <= set(range(1998, 2003))
    assert len(years) == 5
