"""Engine pieces without HTTP: the needle codec and the compact index against a dict model."""

from __future__ import annotations

import random

from arkor.data import needle as nd
from arkor.data.index import Entry, IndexBuilder, NeedleIndex


def test_needle_roundtrip_and_damage() -> None:
    header = nd.Header(key=0x1234, cookie=0xDEADBEEF, size=11, timestamp_ns=123, flags=0)
    raw = nd.encode(header, b"hello world")
    assert len(raw) % 8 == 0 and len(raw) == nd.padded_length(11)
    assert nd.parse_header(raw) == header
    for pos in range(nd.HEADER_SIZE):  # any single flipped bit in the header is detected
        damaged = bytearray(raw)
        damaged[pos] ^= 0x01
        assert nd.parse_header(damaged) is None, pos
    assert nd.parse_header(b"\0" * 40) is None
    assert nd.parse_superblock(nd.pack_superblock(7, 3)) == (7, 3)


def test_index_matches_a_dict_model() -> None:
    rng = random.Random(1)
    index = NeedleIndex(merge_threshold=64)
    model: dict[int, Entry] = {}
    for i in range(20_000):
        key = rng.choice((i + 1, rng.randrange(1, 5_000), rng.randrange(1, 2**64)))
        entry = Entry(key, rng.randrange(1, 300), rng.randrange(0, 2**40) * 8, rng.randrange(0, 2**33),
                      rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32), rng.random() < 0.1)
        index.set(entry)
        model[key] = entry
        if i % 997 == 0:
            probe = rng.choice(list(model))
            assert index.get(probe) == model[probe]
    assert len(index) == len(model)
    assert all(index.get(k) == e for k, e in model.items())
    assert index.get(0) is None
    assert [e.key for e in index] == sorted(model)
    page = index.entries_after(sorted(model)[99], 50)
    assert [e.key for e in page] == sorted(model)[100:150]


def test_index_build_keeps_the_last_entry_per_key() -> None:
    builder = IndexBuilder()
    for key, volume in ((5, 1), (3, 1), (5, 2), (9, 2), (3, 3)):
        builder.add(Entry(key, volume, 16, 1, 1, 1, 1))
    index = NeedleIndex.build(builder)
    assert [(e.key, e.volume) for e in index] == [(3, 3), (5, 2), (9, 2)]


def test_index_memory_per_needle_is_compact() -> None:
    """Goal of the issue: at most 40 bytes per needle (200k here; 1M in bench/bench_data.py)."""
    index = NeedleIndex()
    n = 200_000
    for key in range(1, n + 1):
        index.set(Entry(key * 3, 1, key * 64, 1000, key, key, 1_700_000_000))
    for key in range(1, n // 10):  # out-of-order keys through the overflow dict
        index.set(Entry(key * 3 + 1, 2, key * 64, 1000, key, key, 1_700_000_000))
    index.merge()
    assert index.memory_bytes() / len(index) <= 40
