"""Identifiers: random and unguessable where they grant or reveal anything."""
from __future__ import annotations

import hashlib
import os
import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

_ADJECTIVES = ("amber", "brisk", "calm", "deft", "eager", "fair", "glad", "hardy", "keen", "lucid",
               "merry", "noble", "quick", "quiet", "rapid", "sunny", "swift", "tidy", "vivid", "witty")
_NOUNS = ("badger", "comet", "delta", "falcon", "harbor", "island", "lantern", "meadow", "nebula",
          "orchard", "pebble", "quartz", "river", "summit", "tundra", "valley", "willow", "zephyr")


def job_id() -> str:
    """A ULID: 48-bit millisecond time then 80 random bits, so ids sort by creation time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def cluster_id() -> str:
    return f"cluster-{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.token_hex(5)}"


def api_secret() -> str:
    return "sk_" + secrets.token_hex(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
