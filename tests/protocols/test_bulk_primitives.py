"""The bulk PSI's vectorised building blocks against plain reference implementations.

Each reference here is the obvious per-element (or per-bit) code, written only in the
tests: numpy's unpackbits/packbits for the transpose, one ``cryptography`` call per
element for the digests, the code and the hash.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.bulk import blockcipher as bc
from protocols.bulk.bitmatrix import columns_to_rows, put_rows, take_rows

RNG = np.random.default_rng(20240613)


def _ecb(key: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


@pytest.mark.parametrize("w, r", [(64, 64), (512, 128), (512, 4096), (128, 192), (512, 32768)])
def test_transpose_matches_unpackbits_reference(w: int, r: int) -> None:
    cols = RNG.integers(0, 256, (w, r // 8), dtype=np.uint8)
    bits = np.unpackbits(cols, axis=1, bitorder="little")          # (w, r)
    expected = np.packbits(bits.T, axis=1, bitorder="little")       # (r, w/8)
    before = cols.copy()
    assert np.array_equal(columns_to_rows(cols), expected)
    assert np.array_equal(cols, before)                             # input untouched


def test_transpose_of_one_set_bit_lands_in_the_right_place() -> None:
    cols = np.zeros((512, 16), np.uint8)
    cols[300, 77 // 8] = 1 << (77 % 8)          # column 300, row 77
    rows = columns_to_rows(cols)
    assert rows[77, 300 // 8] == 1 << (300 % 8) and rows.sum() == rows[77, 300 // 8]


def test_transpose_refuses_unaligned_shapes() -> None:
    with pytest.raises(ValueError):
        columns_to_rows(np.zeros((500, 16), np.uint8))
    with pytest.raises(ValueError):
        columns_to_rows(np.zeros((512, 12), np.uint8))


def test_take_and_put_rows_are_fancy_indexing() -> None:
    a = RNG.integers(0, 256, (100, 64), dtype=np.uint8)
    idx = RNG.integers(0, 100, 37)
    assert np.array_equal(take_rows(a, idx), a[idx])
    b = np.zeros_like(a)
    dest = RNG.permutation(100)[:37]
    put_rows(b, dest, a[:37])
    assert np.array_equal(b[dest], a[:37])


def test_aes_is_ecb_and_keeps_shape_and_dtype() -> None:
    key = os.urandom(16)
    data = RNG.integers(0, 2**63, (33, 4, 2), dtype=np.uint64)
    out = bc.Aes(key)(data)
    assert out.shape == data.shape and out.dtype == data.dtype
    assert out.tobytes() == _ecb(key, data.tobytes())
    with pytest.raises(ValueError):
        bc.Aes(key)(np.zeros(15, np.uint8))
    assert "key" in repr(bc.Aes(key)) and key.hex() not in repr(bc.Aes(key))


@pytest.mark.parametrize("slices", [[16, 16, 32], [4096] * 5, [20000, 30000, 100]])
def test_column_streams_are_ctr_keystreams_read_in_slices(slices: list[int]) -> None:
    seeds = [os.urandom(16) for _ in range(3)]
    streams = bc.ColumnStreams(seeds, prefetch=16384)
    got = np.concatenate([streams.next(n) for n in slices], axis=1)
    for i, seed in enumerate(seeds):
        ctr = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
        assert got[i].tobytes() == ctr.update(bytes(sum(slices)))


def _digest_reference(key: bytes, element: bytes) -> bytes:
    blocks = max(1, -(-len(element) // 16))
    msg = len(element).to_bytes(8, "little") + b"SQBULK1\x00" + element.ljust(16 * blocks, b"\0")
    h = bytes(16)
    for i in range(0, len(msg), 16):
        h = _ecb(key, _xor(h, msg[i:i + 16]))
    return h


def test_element_digests_are_length_prepended_cbc_mac() -> None:
    key = os.urandom(16)
    elements = [b"", b"a", b"x" * 15, b"y" * 16, b"z" * 17, b"shuqiao/id/v1/cn_resident_id/110101199003074514"]
    got = bc.element_digests(key, np.array(elements, dtype=bytes))
    assert [bytes(r) for r in got] == [_digest_reference(key, e) for e in elements]


def test_digest_does_not_depend_on_array_width_or_neighbours() -> None:
    key = os.urandom(16)
    short = bc.element_digests(key, np.array([b"abc"], dtype="S3"))
    wide = bc.element_digests(key, np.array([b"q" * 40, b"abc"], dtype="S64"))
    assert np.array_equal(short[0], wide[1])
    other_key = bc.element_digests(os.urandom(16), np.array([b"abc"], dtype="S3"))
    assert not np.array_equal(short, other_key)


def test_code_words_are_four_prf_blocks() -> None:
    key = os.urandom(16)
    digests = RNG.integers(0, 256, (5, 16), dtype=np.uint8)
    got = bc.code_words(bc.Aes(key), digests)
    for d, row in zip(digests, got):
        expected = b"".join(_ecb(key, bytes(d[:15]) + bytes([d[15] ^ b])) for b in range(4))
        assert bytes(row) == expected


def _tccr_chain_reference(key: bytes, row: bytes, function: int, out: int) -> bytes:
    h = bytes(16)
    for b in range(4):
        x = _xor(row[16 * b:16 * b + 16], h)
        p = _ecb(key, x)
        tweak = (0x5351_4255_4C4B_0000 | function << 8 | (b + 1)).to_bytes(8, "little") + bytes(8)
        h = _xor(_ecb(key, _xor(p, tweak)), p)
    return h[:out]


@pytest.mark.parametrize("out", [5, 10, 16])
def test_cr_hash_is_the_tccr_chain(out: int) -> None:
    key = os.urandom(16)
    rows = RNG.integers(0, 256, (7, 64), dtype=np.uint8)
    pi = bc.Aes(key)
    for function in range(3):
        got = bc.cr_hash(pi, rows, bc.tweak_tile(function, 7), out)
        assert [bytes(r) for r in got] == [_tccr_chain_reference(key, bytes(r), function, out)
                                           for r in rows]
    per_row = np.array([0, 2, 1, 1, 0, 2, 2])
    mixed = bc.cr_hash(pi, rows, bc.tweak_tile(per_row, 7), out)
    assert [bytes(r) for r in mixed] == [_tccr_chain_reference(key, bytes(r), int(f), out)
                                         for r, f in zip(rows, per_row)]


def test_cr_hash_depends_on_every_block_and_the_function() -> None:
    pi = bc.Aes(os.urandom(16))
    row = RNG.integers(0, 256, (1, 64), dtype=np.uint8)
    base = bc.cr_hash(pi, row, bc.tweak_tile(0, 1), 16)
    for byte in (0, 17, 40, 63):
        flipped = row.copy()
        flipped[0, byte] ^= 1
        assert not np.array_equal(bc.cr_hash(pi, flipped, bc.tweak_tile(0, 1), 16), base)
    assert not np.array_equal(bc.cr_hash(pi, row, bc.tweak_tile(1, 1), 16), base)


@pytest.mark.parametrize("width", [5, 8, 10, 16])
def test_match_table_finds_exactly_equal_values_of_the_same_function(width: int) -> None:
    from protocols.bulk.matching import MatchTable
    n = 5000
    values = RNG.integers(0, 256, (n, width), dtype=np.uint8)
    values[1, :8] = values[0, :8]               # same 8-byte prefix (tails differ if wide)
    values[2, :] = 0                            # a zero prefix, stored as 1
    functions = RNG.integers(0, 3, n).astype(np.int8)
    functions[:3] = 2
    table = MatchTable(values, np.arange(n) * 10, functions)
    asked = np.concatenate([values[[0, 1, 2, 7, 8]], RNG.integers(0, 256, (50, width), dtype=np.uint8)])
    got = sorted(table.lookup(asked, 2).tolist())
    # Brute force: every (asked value, own row) pair equal in full and of function 2.
    expected = sorted(10 * int(j) for a in asked
                      for j in np.flatnonzero(np.all(values == a, axis=1) & (functions == 2)))
    assert got == expected and {0, 10, 20} <= set(got)
    other = [f for f in range(3) if f != functions[7]][0]
    assert 70 not in table.lookup(values[[7]], other).tolist()      # wrong function


def test_match_table_at_full_load_has_no_false_hits() -> None:
    from protocols.bulk.matching import MatchTable
    n = 200_000
    values = RNG.integers(0, 256, (n, 10), dtype=np.uint8)
    table = MatchTable(values, np.arange(n), np.zeros(n, np.int8))
    probe = RNG.permutation(n)[:30_000]
    assert sorted(table.lookup(values[probe], 0).tolist()) == sorted(probe.tolist())
    assert table.lookup(RNG.integers(0, 256, (30_000, 10), dtype=np.uint8), 0).size == 0
