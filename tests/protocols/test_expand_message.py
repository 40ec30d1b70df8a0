"""RFC 9380 expand_message_xmd(SHA-512) against the draft's known-answer vectors.

Source: oprf/h2c_expand_message_xmd_SHA512_38.json (cfrg/draft-irtf-cfrg-hash-to-curve,
poc/vectors at 664b135; RFC 9380 Appendix K.3).
"""

from __future__ import annotations

import pytest

from protocols import group as h2c

from .vectors import load_json

VECTOR_FILE = "oprf/h2c_expand_message_xmd_SHA512_38.json"
_SUITE = load_json(VECTOR_FILE)


@pytest.mark.parametrize(
    "case",
    _SUITE["tests"],
    ids=[f"{c['len_in_bytes']}-{c['msg'][:12] or 'empty'}" for c in _SUITE["tests"]],
)
def test_expand_message_xmd_vectors(case: dict[str, str]) -> None:
    assert _SUITE["hash"] == "SHA512" and _SUITE["name"] == "expand_message_xmd"
    dst = _SUITE["DST"].encode()
    assert h2c._dst_prime(dst).hex() == case["DST_prime"], VECTOR_FILE
    length = int(case["len_in_bytes"], 16)
    out = h2c.expand_message_xmd(case["msg"].encode(), dst, length)
    assert out.hex() == case["uniform_bytes"], VECTOR_FILE


@pytest.mark.parametrize("msg", [b"", b"abc", b"\x00" * 300, bytes(range(256))])
def test_precomputed_64_byte_expander_matches_generic(msg: bytes) -> None:
    dst = b"HashToGroup-OPRFV1-\x00-ristretto255-SHA512"
    assert h2c.make_expand_64(dst)(msg) == h2c.expand_message_xmd(msg, dst, 64)
    assert h2c.make_hash_to_group(dst)(msg) == h2c.hash_to_group(msg, dst)
    assert h2c.make_hash_to_scalar(dst)(msg) == h2c.hash_to_scalar(msg, dst)


def test_oversize_dst_is_hashed_down() -> None:
    long_dst = b"D" * 300
    assert len(h2c._dst_prime(long_dst)) == 65
    assert h2c.expand_message_xmd(b"m", long_dst, 32) != h2c.expand_message_xmd(
        b"m", long_dst[:255], 32
    )


@pytest.mark.parametrize("length", [0, 255 * 64 + 1, 70000])
def test_out_of_range_lengths_are_refused(length: int) -> None:
    with pytest.raises(ValueError):
        h2c.expand_message_xmd(b"m", b"DST", length)
