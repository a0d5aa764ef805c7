"""glibc malloc tuning (app/allocator.py): big blocks freed by many threads go back to the system."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import allocator

ROOT = Path(__file__).resolve().parents[2]

# 16 threads each allocate 20 blocks of 300 KB at a time, ten times over, with a small long-lived
# block allocated after each big one (as a request's bytes and lists sit beside the hub's and
# pool's small objects). Untuned glibc serves the big blocks from per-thread arenas and keeps the
# holes; the script prints how much RSS grew once every big block is freed.
FRAGMENT = """
import json, re, sys, threading
from app import allocator
applied = allocator.tune() if sys.argv[1] == "tuned" else {}
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
kept = []
base = rss()
barrier = threading.Barrier(16)
def work():
    barrier.wait()
    mine = []
    for _ in range(10):
        blocks = []
        for _ in range(20):
            blocks.append(bytearray(300_000))
            mine.append(bytes(600))
        del blocks
    kept.append(mine)
threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"applied": applied, "grew_mb": rss() - base}))
"""

glibc_only = pytest.mark.skipif(not allocator.supported(), reason="mallopt is glibc's; other C libraries are left alone")


def _fragment(mode: str, **env) -> dict:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", FRAGMENT, mode], cwd=ROOT, env=full_env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return json.loads(out)


@glibc_only
def test_tuned_threads_return_freed_big_blocks():
    tuned = _fragment("tuned")
    assert tuned["applied"] == {"MALLOC_ARENA_MAX": 2, "MALLOC_MMAP_THRESHOLD_": 64 * 1024}
    assert tuned["grew_mb"] < 20, tuned
    # The same work untuned keeps most of one round's 96 MB: the scenario is what the tuning fixes.
    assert _fragment("plain")["grew_mb"] > 60


@glibc_only
def test_a_value_the_operator_set_is_left_alone():
    tuned = _fragment("tuned", MALLOC_ARENA_MAX="4")
    assert tuned["applied"] == {"MALLOC_MMAP_THRESHOLD_": 64 * 1024}


def test_gunicorn_master_tunes_before_workers_start(monkeypatch):
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    calls = []
    monkeypatch.setattr(allocator, "tune", lambda: calls.append("tune") or {})
    monkeypatch.setenv("MANAGEMENT_SECRET", "sk_management_" + "x" * 40)
    conf.on_starting(server=None)  # the master runs it once, before it forks any worker
    assert calls == ["tune"]
