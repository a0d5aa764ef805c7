"""Python's cyclic garbage collector, tuned for a worker process of the server.

A collection stops every thread of the process while it walks its generation. Measured in a
control-plane worker serving 1,000 tenants (bench/README.md, "The garbage collector"), the
defaults ran a full collection every 15 s or so, each 30-140 ms of CPU over the ~120,000 objects
the worker held, half of them the modules, routes, OpenAPI document and settings loaded at
start-up, which never become garbage; every request in flight waited that long.

`tune()`, once the application is loaded and before the first request: collect what start-up left
behind, then freeze the rest (moved to the permanent generation, never walked again; it stays
alive, as it would have), and raise the young generation's threshold, so more temporaries are
freed by their reference counts before a collection looks at them. Cycles made later are still
collected, as before.
"""
from __future__ import annotations

import gc

# Net allocations of tracked objects that start a young collection (Python's default is 700),
# then how many younger collections start the next generation's (the defaults, 10 and 10). Of
# 700, 2,000 and 10,000 with the freeze, 2,000 gave the shortest longest pauses (10,000 the
# fewest collections, but young ones of 40-70 ms).
THRESHOLDS = (2_000, 10, 10)


def tune() -> dict[str, int]:
    """Collect, freeze what is left and set THRESHOLDS; returns what it did."""
    collected = gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return {"collected": collected, "frozen": gc.get_freeze_count()}
