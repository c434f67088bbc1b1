"""Seeds derived from their position in the work, never from scheduling.

Every random choice (bracket order, coins, request seeds) comes from a hash of the run
seed and *where* it is used (record id, round, match, order, wave), so results do not
depend on concurrency, on which records share a batch, or on the rest of the file.
"""

from __future__ import annotations

import hashlib
import json


def derive_seed(*parts: object) -> int:
    """A 31-bit seed (every backend accepts it) from any JSON-able parts; 1 and "1" differ."""
    digest = hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1
