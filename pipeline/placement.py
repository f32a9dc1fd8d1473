"""Round-robin placement of new chunks through one shared Redis counter."""
from __future__ import annotations

from typing import Sequence

import redis

COUNTER_KEY = "minis3:placement:rr"


class RoundRobinPlacement:
    """Several workers share one counter (``INCRBY``), so chunks spread evenly across nodes."""

    def __init__(self, client: redis.Redis, node_ids: Sequence[str], key: str = COUNTER_KEY):
        self.client = client
        self.node_ids = list(node_ids)
        self.key = key

    def next_nodes(self, count: int) -> list[str]:
        if count <= 0:
            return []
        last = int(self.client.incrby(self.key, count))
        first = last - count + 1
        return [self.node_ids[(n - 1) % len(self.node_ids)] for n in range(first, last + 1)]
