"""Seeded byte/character mutation for the fuzz-style tests of parsers (aws-chunked framing, SigV4
headers and queries): one place for the edit model, so that every such test corrupts input alike.

What lives here: pure, seeded edits of a mutable sequence. What must not: servers, clients or
assertions (each test states what a mutated input must produce).
"""

from __future__ import annotations

import random
from collections.abc import MutableSequence, Sequence
from typing import TypeVar

T = TypeVar("T")


def mutate(
    items: MutableSequence[T], rng: random.Random, alphabet: Sequence[T], edits: int,
    replace_below: float, delete_below: float,
) -> None:
    """Apply `edits` single-element edits in place at random positions: a draw under `replace_below`
    overwrites one element from `alphabet`, under `delete_below` deletes it, else one is inserted."""
    for _ in range(edits):
        pos = rng.randrange(len(items))
        op = rng.random()
        if op < replace_below:
            items[pos] = rng.choice(alphabet)
        elif op < delete_below:
            del items[pos]
        else:
            items.insert(pos, rng.choice(alphabet))
