"""How many names a listing asks for at a time while it rolls names up into common prefixes.

A listing with a delimiter reads names in ``_id`` order in batches; a common prefix is listed at
its first name, and the rest of its names are skipped with the next query, which starts after the
prefix. Two ways to spend a page: large batches read every name of every common prefix on the way
(cheap when prefixes hold a few names each), batches of two seek once per prefix (cheap when they
hold many). A query costs about as much as reading 30 names (0.6 ms against 20 us a name on the
stand-in, measured with ``bench/listing.py``; MongoDB's round trip against its per-document cost is
of the same order), so the pace follows the names per listed entry seen so far: above
``SEEK_ABOVE`` it seeks, below it asks for as many names as the entries still wanted should take.
Either way a page reads O(page) names, wherever it lies.
"""
from __future__ import annotations

import math

LIST_BATCH = 1001  # a full page of 1,000 and one more, to tell whether it is the last
SEEK_BATCH = 2  # one common prefix's first name, and the next (another entry, or the same prefix's)
SEEK_ABOVE = 32  # names per listed entry above which a query per prefix is cheaper than reading them


class RollupPace:
    """The size of the next batch of a listing with a delimiter."""

    def __init__(self, first: int):
        self.batch = max(SEEK_BATCH, min(first, LIST_BATCH))
        self.per_entry: float | None = None  # names per listed entry seen so far

    def after(self, read: int, complete: int, got: int, left: int) -> int:
        """The next batch after one that returned ``got`` names, of which the first ``read`` made
        ``complete`` whole entries (a last common prefix that may go on past the batch is not whole);
        ``left`` entries are still wanted (one more than the page holds, to tell whether it is the last)."""
        if complete:
            self.per_entry = read / complete
        elif self.per_entry is None or got > self.per_entry:
            self.per_entry = float(got)  # one common prefix ran past the whole batch: at least that large
        if self.per_entry > SEEK_ABOVE:
            self.batch = SEEK_BATCH
        else:
            self.batch = max(SEEK_BATCH, min(LIST_BATCH, math.ceil(left * self.per_entry)))
        return self.batch
