"""The garbage collector's tuning (app/collector.py): start-up frozen, later cycles still collected."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from app import collector

ROOT = Path(__file__).resolve().parents[2]

# A fresh process loads the app as a gunicorn worker does, tunes, then makes a cycle and drops it.
LOADED = """
import gc, json, sys, weakref
from app import collector, create_app, settings
app = create_app(settings.load({"MANAGEMENT_SECRET": "sk_management_" + "x" * 40,
                                "DIFFERENTIAL_DATA_DIR": sys.argv[1], "SWEEPER_ENABLED": "false"}))
before = len(gc.get_objects())
done = collector.tune()
after = len(gc.get_objects())
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a
alive = weakref.ref(a)
del a, b
gc.collect()
print(json.dumps({"done": done, "tracked_before": before, "tracked_after": after,
                  "threshold": gc.get_threshold(), "cycle_collected": alive() is None}))
app.extensions["differential"].close()
"""


def test_start_up_objects_are_frozen_and_later_cycles_still_collected(tmp_path):
    out = subprocess.run([sys.executable, "-c", LOADED, str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True, env={**os.environ, "LOG_LEVEL": "warning"}).stdout
    r = json.loads(out.strip().splitlines()[-1])
    # The loaded app is tens of thousands of objects, and a collection no longer walks them.
    assert r["done"]["frozen"] > 20_000, r
    assert r["tracked_after"] < r["tracked_before"] / 10, r
    assert tuple(r["threshold"]) == collector.THRESHOLDS
    assert r["cycle_collected"], r


def test_every_gunicorn_worker_tunes_once_its_app_is_loaded(monkeypatch):
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    monkeypatch.setenv("MANAGEMENT_SECRET", "sk_management_" + "x" * 40)
    spec.loader.exec_module(conf)
    calls = []
    monkeypatch.setattr(collector, "tune", lambda: calls.append("tune") or {})
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # its SIGTERM handler is not this test's

    class Worker:
        def handle_exit(self, sig, frame):
            pass

    conf.post_worker_init(Worker())  # gunicorn calls it after load_wsgi, before the first request
    assert calls == ["tune"]
