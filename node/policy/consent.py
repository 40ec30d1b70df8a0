"""The consent digest: which identifiers a query asked, bound to each one's authorisation.

The asking node (the fund centre) may only ask about applicants who authorised it; each
row of its applicant file carries an authorisation reference (a consent or application
number). The digest commits to every (identifier, reference) row asked, while the
ledgers that hold it hold no identifier. It travels in the query header
(`QueryHeader.consent_digest`); the asker records it in its ledger entry, the answerer
records the same value in its own entry and signs it in its receipt, so both ledgers
bind the same digest, and an auditor holding the applicant file recomputes it
(`shuqiao audit consent`).

Construction ("shuqiao/consent-digest/v1"), exactly:

    field(b)   = uint32_be(len(b)) || b
    record     = field(identifier) || field(utf8(reference))
    digest     = SHA-256("shuqiao/consent-digest/v1\\n" || uint64_be(n) || record_1 || ... || record_n)

where `identifier` is the typed identifier the query asked (adapters.encode:
"shuqiao/id/v1/<type>/<normalised value>"), `reference` is the row's reference with
surrounding whitespace removed, and record_1..n are the distinct records sorted as byte
strings. One record per row: a person on two rows with references R1 and R2 gives two
records, which digest differently from one row with the reference "R1|R2". Rows that are
not asked (invalid identifier, no reference) are not in it.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from adapters import IdType, read_applicants

__all__ = ["CONTEXT", "consent_digest", "applicant_pairs", "DIGEST_PATTERN"]

CONTEXT = b"shuqiao/consent-digest/v1\n"
DIGEST_PATTERN = re.compile(r"[0-9a-f]{64}")


def _field(data: bytes) -> bytes:
    if len(data) >= 1 << 32:
        raise ValueError("a consent field is shorter than 4 GiB")
    return len(data).to_bytes(4, "big") + data


def consent_digest(pairs: Iterable[tuple[bytes, str]]) -> str:
    """Hex digest over (typed identifier, reference) rows; see the module doc."""
    records = sorted({_field(identifier) + _field(reference.encode("utf-8"))
                      for identifier, reference in pairs})
    h = hashlib.sha256(CONTEXT)
    h.update(len(records).to_bytes(8, "big"))
    for record in records:
        h.update(record)
    return h.hexdigest()


def applicant_pairs(source, id_column: str, auth_column: str,
                    id_type: IdType) -> list[tuple[bytes, str]]:
    """The (identifier, reference) rows of an applicant file a query would ask about.

    The asking job's reader (adapters.read_applicants), so the same rows: a row without a
    reference, or with an identifier that does not validate or lost digits in a
    spreadsheet, is not asked.

    Raises:
        SourceError: a column is missing, or the file cannot be read.
    """
    return [(a.identifier, a.reference)
            for a in read_applicants(source, id_column, id_type, auth_column=auth_column)
            if not a.reason]
