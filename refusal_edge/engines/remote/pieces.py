"""Token ids from text: the tokens llama-server withheld inside a UTF-8 character come back only as their bytes
(llama_server.stream), and the ids whose pieces spell those bytes are found here, in time linear in the bytes."""

from __future__ import annotations

from typing import Sequence


def split_into_pieces(text: bytes, count: int, pieces: dict[bytes, int]) -> list[int] | None:
    """Token ids of exactly ``count`` vocabulary pieces that spell ``text``, or None; where several splits do, the
    one taking the longest piece first (then the longest next, ...)."""
    found = first_split(text, [count], pieces)
    return None if found is None else found[1]


def first_split(text: bytes, counts: Sequence[int], pieces: dict[bytes, int]) -> tuple[int, list[int]] | None:
    """The first of ``counts`` for which ``text`` is that many pieces, and their ids (see split_into_pieces).

    Linear in ``len(text)``: a text longer than the most pieces of the longest length is refused at once, and the
    search is a dynamic programme over positions (bit sets, one per piece length), not a backtracking one, which a
    hostile ``bytes`` field could make exponential."""
    lengths = sorted({len(piece) for piece in pieces}, reverse=True)
    n, most = len(text), max(counts, default=0)
    if not text:
        return (0, []) if 0 in counts else None
    if not lengths or most <= 0 or n > most * lengths[0]:
        return None
    # starts[L]: bit s set where text[s:s+L] is a piece. rest[c]: bit s set where text[s:] is c pieces.
    starts = {L: sum_bits(1 << s for s in range(n - L + 1) if text[s:s + L] in pieces) for L in lengths if L <= n}
    rest = [1 << n]
    for _ in range(most):
        rest.append(sum_bits(starts[L] & (rest[-1] >> L) for L in starts))
    count = next((c for c in counts if c > 0 and rest[c] & 1), None)
    if count is None:
        return None
    found, at = [], 0
    for left in range(count, 0, -1):
        length = next(L for L in starts if starts[L] >> at & 1 and rest[left - 1] >> (at + L) & 1)
        found.append(pieces[text[at:at + length]])
        at += length
    return count, found


def sum_bits(masks) -> int:
    union = 0
    for mask in masks:
        union |= mask
    return union
