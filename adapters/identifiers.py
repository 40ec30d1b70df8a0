"""Typed person and organisation identifiers: validation, normalisation, OPRF input encoding.

Every identifier that enters the OPRF is first normalised here, so that the fund centre's
"１１０１０５１９４９１２３１００２ｘ" and the agency's "11010519491231002X" map to the
same bytes. Normalisation only undoes *presentation* differences (full-width digits,
case, surrounding whitespace, phone prefixes, the 15-digit legacy resident id); it never
"repairs" a value. Anything that does not validate raises :class:`InvalidIdentifier`,
and the row is rejected with its line number (DESIGN.md, "Identifiers").

Privacy rule: no message, reason or exception produced here contains the identifier or
any part of it, because these messages end up in logs, reports and the CLI.

Standards:
  * 居民身份证号 — GB 11643-1999; check character ISO 7064 MOD 11-2.
  * 统一社会信用代码 — GB 32100-2015; check character mod 31 over a 31-symbol alphabet.
    The embedded organisation code (positions 9-17) follows GB 11714-1997 (mod 11).
"""

from __future__ import annotations

import random
import unicodedata
from datetime import date
from enum import Enum

__all__ = [
    "IdType",
    "InvalidIdentifier",
    "normalise",
    "encode",
    "synthetic_resident_id",
    "synthetic_uscc",
]


class IdType(str, Enum):
    """The declared type of an identifier column; part of the OPRF domain separation."""

    CN_RESIDENT_ID = "cn_resident_id"
    CN_USCC = "cn_uscc"
    PHONE_CN = "phone_cn"
    CUSTOM = "custom"


class InvalidIdentifier(ValueError):
    """An identifier that does not validate.

    Attributes:
        reason: a short fixed English phrase ("bad check digit", "invalid birth date",
            "wrong length", "invalid character", "empty", ...). It never contains the
            identifier or any part of it.
        id_type: the type the value was checked against.
    """

    def __init__(self, reason: str, id_type: IdType | None = None) -> None:
        self.reason = reason
        self.id_type = id_type
        label = id_type.value if id_type is not None else "identifier"
        super().__init__(f"invalid {label}: {reason}")


_DIGITS = frozenset("0123456789")
_MIN_BIRTH_DATE = date(1900, 1, 1)
_CUSTOM_MAX_LEN = 256
_DOMAIN_PREFIX = b"shuqiao/id/v1/"

# ISO 7064 MOD 11-2 as tabulated in GB 11643-1999.
_RID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RID_CHECK = "10X98765432"

# GB 32100-2015: I, O, Z, S, V are excluded to avoid confusion with 1, 0, 2, 5, U.
_USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {c: i for i, c in enumerate(_USCC_CHARSET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

# Plausible county-level administrative division codes (GB/T 2260) for synthetic data:
# Changzhou's districts first, since that is where the pilot runs.
_REGION_CODES = (
    "320402", "320404", "320411", "320412", "320413", "320481",  # 常州
    "110101", "110105", "310101", "310115", "320102", "320506",
    "330106", "440305", "420102", "510104", "610113", "370102",
)


def _nfkc_strip(raw: str) -> str:
    if not isinstance(raw, str):
        raise TypeError("identifier must be a str")
    if raw.isascii():  # NFKC leaves ASCII unchanged; registries are millions of ASCII rows
        return raw.strip()
    return unicodedata.normalize("NFKC", raw).strip()


def _present(raw: str, kind: IdType) -> str:
    """``raw`` without presentation differences (NFKC, surrounding space); never empty."""
    value = _nfkc_strip(raw)
    if not value:
        raise InvalidIdentifier("empty", kind)
    return value


def _resident_check_char(first17: str) -> str:
    return _RID_CHECK[sum(map(int.__mul__, map(int, first17), _RID_WEIGHTS)) % 11]


def _birth_date(yyyymmdd: str, today: date) -> date:
    try:
        born = date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        born = None
    if born is None or not (_MIN_BIRTH_DATE <= born <= today):
        raise InvalidIdentifier("invalid birth date", IdType.CN_RESIDENT_ID)
    return born


def _normalise_resident_id(raw: str, today: date | None) -> str:
    kind = IdType.CN_RESIDENT_ID
    value = _present(raw, kind).upper()
    body, last = value[:-1], value[-1]
    if not ((not body or (body.isascii() and body.isdigit())) and (last in _DIGITS or last == "X")):
        raise InvalidIdentifier("invalid character", kind)
    if len(value) == 15:
        if last == "X":
            raise InvalidIdentifier("invalid character", kind)
        # Legacy (pre-1999) form: YYMMDD birth date, always 19YY, no check character.
        first17 = value[:6] + "19" + value[6:]
        has_check = False
    elif len(value) == 18:
        first17 = body
        has_check = True
    else:
        raise InvalidIdentifier("wrong length", kind)
    if first17[0] == "0":
        raise InvalidIdentifier("invalid region code", kind)
    _birth_date(first17[6:14], today or date.today())
    expected = _resident_check_char(first17)
    if has_check and last != expected:
        raise InvalidIdentifier("bad check digit", kind)
    return first17 + expected


def _uscc_check_char(first17: str) -> str:
    total = sum(_USCC_VALUE[c] * w for c, w in zip(first17, _USCC_WEIGHTS))
    return _USCC_CHARSET[(31 - total % 31) % 31]


def _normalise_uscc(raw: str) -> str:
    kind = IdType.CN_USCC
    value = _present(raw, kind).upper()
    if any(c not in _USCC_VALUE for c in value):
        raise InvalidIdentifier("invalid character", kind)
    if len(value) != 18:
        raise InvalidIdentifier("wrong length", kind)
    if value[17] != _uscc_check_char(value[:17]):
        raise InvalidIdentifier("bad check digit", kind)
    return value


def _normalise_phone(raw: str) -> str:
    kind = IdType.PHONE_CN
    value = _present(raw, kind).replace(" ", "").replace("-", "")
    if value.startswith("+86"):
        value = value[3:]
    elif value.startswith("0086"):
        value = value[4:]
    elif value.startswith("86") and len(value) == 13:
        value = value[2:]
    elif value.startswith("+"):
        raise InvalidIdentifier("not a mainland China mobile number", kind)
    if not value:
        raise InvalidIdentifier("empty", kind)
    if not set(value) <= _DIGITS:
        raise InvalidIdentifier("invalid character", kind)
    if len(value) != 11:
        raise InvalidIdentifier("wrong length", kind)
    if value[0] != "1" or value[1] in "012":
        raise InvalidIdentifier("not a mainland China mobile number", kind)
    return value


def _normalise_custom(raw: str) -> str:
    kind = IdType.CUSTOM
    value = _present(raw, kind)
    if len(value) > _CUSTOM_MAX_LEN:
        raise InvalidIdentifier("too long", kind)
    # Cc: control characters; Cf: invisible format characters (zero-width space, BOM)
    # that would make two ids look equal but hash differently; Cs: lone surrogates.
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in value):
        raise InvalidIdentifier("invalid character", kind)
    return value


def normalise(id_type: IdType | str, raw: str, *, today: date | None = None) -> str:
    """Validate ``raw`` as an identifier of ``id_type`` and return its canonical form.

    Args:
        id_type: the declared type (an :class:`IdType` or its string value).
        raw: the value as found in the source.
        today: the reference date for birth-date checks (resident ids); defaults to
            the local date. Tests inject it.

    Returns:
        cn_resident_id: 18 characters, 17 digits and a digit or ``X`` (15-digit legacy
        ids are converted). cn_uscc: 18 upper-case characters. phone_cn: 11 digits.
        custom: the NFKC-normalised, stripped text.

    Raises:
        InvalidIdentifier: with a ``reason`` that never contains the value.
    """
    id_type = IdType(id_type)
    if id_type is IdType.CN_RESIDENT_ID:
        return _normalise_resident_id(raw, today)
    if id_type is IdType.CN_USCC:
        return _normalise_uscc(raw)
    if id_type is IdType.PHONE_CN:
        return _normalise_phone(raw)
    return _normalise_custom(raw)


def encode(id_type: IdType | str, normalised: str) -> bytes:
    """The domain-separated bytes fed to the OPRF for a normalised identifier.

    ``b"shuqiao/id/v1/" + type + b"/" + utf8(normalised)``: the same digits typed as a
    phone number and as a custom id give unrelated PRF outputs. Type values contain no
    ``/``, so the encoding is injective.
    """
    id_type = IdType(id_type)
    return _DOMAIN_PREFIX + id_type.value.encode("ascii") + b"/" + normalised.encode("utf-8")


def synthetic_resident_id(
    rng: random.Random, birth_year_range: tuple[int, int] = (1960, 2005)
) -> str:
    """A random, valid 18-character resident id for demos and tests (not a real person's).

    Args:
        rng: the randomness source (seed it for reproducible data).
        birth_year_range: inclusive range of birth years; must lie in 1900..this year.
    """
    first, last = birth_year_range
    start = date(first, 1, 1).toordinal()
    end = min(date(last, 12, 31), date.today()).toordinal()
    born = date.fromordinal(rng.randint(start, end))
    first17 = f"{rng.choice(_REGION_CODES)}{born:%Y%m%d}{rng.randrange(1000):03d}"
    return first17 + _resident_check_char(first17)


def _organisation_code(rng: random.Random) -> str:
    # GB 11714-1997: 8 characters and a mod-11 check character.
    body = "".join(rng.choice("0123456789") for _ in range(8))
    total = sum(int(c) * w for c, w in zip(body, (3, 7, 9, 10, 5, 8, 4, 2)))
    check = 11 - total % 11
    return body + {10: "X", 11: "0"}.get(check, str(check))


def synthetic_uscc(rng: random.Random) -> str:
    """A random, valid 统一社会信用代码 for demos and tests (not a real organisation's).

    Registration authority 9 (market regulation), type 1/2/3, a plausible region code,
    a GB 11714 organisation code and the GB 32100 check character.
    """
    first17 = "9" + rng.choice("123") + rng.choice(_REGION_CODES) + _organisation_code(rng)
    return first17 + _uscc_check_char(first17)
