"""The consent digest construction (node/policy/consent.py), against the README's worked example."""
from __future__ import annotations

import hashlib
import struct

from adapters import IdType, encode, normalise
from node.policy.consent import consent_digest

SAMPLE_ID = "11010519491231002X"  # the GB 11643 sample number, not a person
WORKED_EXAMPLE = "f1d70c1333b01ab46d2b059be6a8326e3ba1e0ec5330d800eb7b50a51de6bd04"


def typed(value: str) -> bytes:
    return encode(IdType.CN_RESIDENT_ID, normalise(IdType.CN_RESIDENT_ID, value))


def reference_digest(rows: list[tuple[bytes, str]]) -> str:
    """The README's description, written out independently of the module."""
    records = sorted({struct.pack(">I", len(i)) + i + struct.pack(">I", len(r.encode())) + r.encode()
                      for i, r in rows})
    return hashlib.sha256(b"shuqiao/consent-digest/v1\n" + struct.pack(">Q", len(records))
                          + b"".join(records)).hexdigest()


def test_worked_example_of_the_readme():
    assert typed(SAMPLE_ID) == b"shuqiao/id/v1/cn_resident_id/11010519491231002X"
    assert consent_digest([(typed(SAMPLE_ID), "GJJ-2026-001")]) == WORKED_EXAMPLE
    assert reference_digest([(typed(SAMPLE_ID), "GJJ-2026-001")]) == WORKED_EXAMPLE


def test_two_rows_of_one_person_differ_from_one_row_with_joined_references():
    two_rows = consent_digest([(typed(SAMPLE_ID), "R1"), (typed(SAMPLE_ID), "R2")])
    one_row = consent_digest([(typed(SAMPLE_ID), "R1|R2")])
    assert two_rows != one_row
    assert two_rows == reference_digest([(typed(SAMPLE_ID), "R1"), (typed(SAMPLE_ID), "R2")])


def test_field_boundaries_cannot_be_shifted():
    # without length prefixes, ("...X", "1R") and ("...X1", "R") would concatenate alike
    assert consent_digest([(b"ab", "c")]) != consent_digest([(b"a", "bc")])
    # the identifier's type is part of it: the same digits as another type differ
    assert consent_digest([(encode(IdType.CUSTOM, SAMPLE_ID), "R")]) != \
        consent_digest([(typed(SAMPLE_ID), "R")])


def test_row_order_and_exact_duplicates_do_not_matter():
    a, b = (typed(SAMPLE_ID), "R1"), (encode(IdType.CUSTOM, "A-1"), "R9")
    assert consent_digest([a, b]) == consent_digest([b, a, a])
