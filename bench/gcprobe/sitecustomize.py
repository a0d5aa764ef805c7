"""What the garbage collector costs a process: `--env PYTHONPATH=bench/gcprobe --env GC_PROBE_DIR=DIR`.

Python imports this at start-up when its folder is on PYTHONPATH, so the control-plane's master and
(through the fork) every gunicorn worker count their collections: per generation, how many and the
CPU of each (the thread's own clock: a collection holds the GIL, so every other thread waits that
long). At exit each process writes DIR/gc-<pid>.json: the whole run, and the last GC_PROBE_WINDOW
seconds (default 75: a `bench/tenants.py` calls phase). Only with GC_PROBE_DIR set.
"""
import atexit
import gc
import json
import os
import time

_DIR = os.environ.get("GC_PROBE_DIR")
_WINDOW = float(os.environ.get("GC_PROBE_WINDOW", "75"))


def _summary(rows):
    out = {}
    for gen in range(3):
        ms = sorted(r[2] for r in rows if r[1] == gen)
        out[f"gen{gen}"] = {"collections": len(ms), "cpu_ms": round(sum(ms), 1),
                            "longest_ms": [round(x, 1) for x in ms[-5:]]}
    return out


def _install():
    rows = []  # (monotonic end, generation, CPU ms)
    started = [0.0]

    def callback(phase, info):
        if phase == "start":
            started[0] = time.thread_time()
        else:
            rows.append((time.monotonic(), info["generation"], (time.thread_time() - started[0]) * 1000))

    def dump():
        end = time.monotonic()
        doc = {"pid": os.getpid(), "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(),
               "run": _summary(rows), "window_s": _WINDOW,
               "window": _summary([r for r in rows if r[0] > end - _WINDOW])}
        with open(os.path.join(_DIR, f"gc-{os.getpid()}.json"), "w") as f:
            json.dump(doc, f)

    gc.callbacks.append(callback)
    os.register_at_fork(after_in_child=rows.clear)  # a worker counts its own, not the master's too
    atexit.register(dump)


if _DIR:
    _install()
