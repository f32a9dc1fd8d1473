"""Round-robin placement of new chunks through one shared Redis counter."""
from __future__ import annotations

from typing import Collection, Sequence

import redis

COUNTER_KEY = "minis3:placement:rr"


class RoundRobinPlacement:
    """Several workers share one counter (``INCRBY``), so chunks spread evenly across nodes."""

    def __init__(self, client: redis.Redis, node_ids: Sequence[str], key: str = COUNTER_KEY):
        self.client = client
        self.node_ids = list(node_ids)
        self.key = key

    def _starts(self, count: int) -> range:
        last = int(self.client.incrby(self.key, count))
        return range(last - count, last)

    def next_nodes(self, count: int) -> list[str]:
        if count <= 0:
            return []
        return [self.node_ids[n % len(self.node_ids)] for n in self._starts(count)]

    def next_stripes(self, count: int, width: int, usable: Collection[str] | None = None) -> list[list[str]]:
        """For each of ``count`` chunks, ``width`` distinct nodes: the ring of nodes walked from the
        counter's next position, skipping nodes not ``usable`` (down, full or draining). Consecutive
        chunks start one node further, so fragment ``i`` of successive chunks rotates over every node
        and each node receives the same share. Fewer than ``width`` usable nodes give shorter stripes."""
        if count <= 0:
            return []
        ring = self.node_ids
        ok = [n in usable for n in ring] if usable is not None else [True] * len(ring)
        stripes = []
        for start in self._starts(count):
            stripe = []
            for step in range(len(ring)):
                j = (start + step) % len(ring)
                if ok[j]:
                    stripe.append(ring[j])
                    if len(stripe) == width:
                        break
            stripes.append(stripe)
        return stripes
