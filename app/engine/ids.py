"""Identifiers: random and unguessable where they grant or reveal anything."""
from __future__ import annotations

import hashlib
import random
import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

_ADJECTIVES = ("amber", "brisk", "calm", "deft", "eager", "fair", "glad", "hardy", "keen", "lucid",
               "merry", "noble", "quick", "quiet", "rapid", "sunny", "swift", "tidy", "vivid", "witty")
_NOUNS = ("badger", "comet", "delta", "falcon", "harbor", "island", "lantern", "meadow", "nebula",
          "orchard", "pebble", "quartz", "river", "summit", "tundra", "valley", "willow", "zephyr")


_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]  # 10 bits -> two characters


def job_id() -> str:
    """A ULID: 48-bit millisecond time then 80 random bits, so ids sort by creation time.

    The bits come from `random` (reseeded in every forked worker), not os.urandom: a job id grants
    nothing (a job is read only with its cluster's secret) and must only be unique; the system
    call per id was a visible share of a create's CPU."""
    value = (int(time.time() * 1000) << 80) | random.getrandbits(80)
    out = []
    for _ in range(13):
        out.append(_PAIRS[value & 1023])
        value >>= 10
    return "".join(reversed(out))


def cluster_id() -> str:
    return f"cluster-{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.token_hex(5)}"


def api_secret() -> str:
    return "sk_" + secrets.token_hex(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
