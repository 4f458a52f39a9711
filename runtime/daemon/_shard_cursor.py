"""Paging a list ordered by session id across N shards: the merge and its cursor.

Every shard lists its own sessions by id, so the merged list is a k-way merge of
one page from each shard. The cursor carries one position per shard (after which
id it goes on, or that it has nothing left), so the next page costs one page
query per shard that still has rows: never an offset scan, and a shard that is
done is not asked again. On the wire the cursor is opaque: base64url of a JSON
array (``null``: from the start, a string: after that id, ``true``: done).
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = [
    "BadCursor",
    "Position",
    "ShardPage",
    "decode_cursor",
    "encode_cursor",
    "merge_pages",
]

Position = str | bool | None
"""Where a shard's listing goes on: None from the start, an id after that id, True done."""

MAX_CURSOR_CHARS = 64 * 1024
MAX_POSITION_CHARS = 512
_decode_positions = msgspec.json.Decoder(list[str | bool | None]).decode


class BadCursor(ValueError):
    """A page cursor this daemon did not give out (or gave out for another worker count)."""


@dataclass(frozen=True, slots=True)
class ShardPage:
    """One shard's answer: its rows in id order and whether it has more after them."""

    items: list[Any]
    more: bool


def encode_cursor(positions: Sequence[Position]) -> str:
    """The opaque cursor for ``positions`` (one per shard)."""
    raw = msgspec.json.encode(list(positions))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str | None, shards: int) -> list[Position]:
    """The positions in ``cursor`` (every shard from the start when None).

    Raises:
        BadCursor: the text is not a cursor of this daemon with ``shards`` shards.
    """
    if cursor is None:
        return [None] * shards
    if len(cursor) > MAX_CURSOR_CHARS:
        raise BadCursor(f"the cursor is longer than {MAX_CURSOR_CHARS} characters")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        positions = _decode_positions(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise BadCursor(f"the cursor is not a next_cursor this daemon gave out ({exc})") from None
    if len(positions) != shards:
        raise BadCursor(
            f"the cursor holds {len(positions)} positions, this daemon has {shards} workers: "
            "start the listing again without a cursor"
        )
    if all(position is True for position in positions):  # never given out: None ends a listing
        raise BadCursor("the cursor is not a next_cursor this daemon gave out")
    for position in positions:
        if position is False:
            raise BadCursor("the cursor is not a next_cursor this daemon gave out")
        if isinstance(position, str) and not 0 < len(position) <= MAX_POSITION_CHARS:
            raise BadCursor("the cursor is not a next_cursor this daemon gave out")
    return positions


def merge_pages(
    pages: Sequence[ShardPage | None],
    positions: Sequence[Position],
    limit: int,
    key: Callable[[Any], str],
) -> tuple[list[Any], list[Position] | None]:
    """The first ``limit`` rows of the shards' pages by ``key``, and the positions after
    them (None when every shard is done).

    ``pages[k]`` is None for a shard not asked (done already). Each shard's page must
    hold up to ``limit`` rows after ``positions[k]``: then the merged page is the first
    ``limit`` rows of the whole listing after the cursor.
    """
    tagged = [
        [(key(item), shard, item) for item in page.items]
        for shard, page in enumerate(pages)
        if page is not None
    ]
    merged = list(heapq.merge(*tagged, key=lambda row: row[0]))[:limit]
    after = list(positions)
    taken = [0] * len(pages)
    for item_key, shard, _ in merged:
        after[shard] = item_key
        taken[shard] += 1
    for shard, page in enumerate(pages):
        if page is not None and not page.more and taken[shard] == len(page.items):
            after[shard] = True
    done = all(position is True for position in after)
    return [item for _, _, item in merged], None if done else after
