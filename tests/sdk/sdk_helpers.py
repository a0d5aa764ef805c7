"""Helpers shared by the SDK tests (imported as a plain module: tests/sdk is on sys.path)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = "condition"):
    """Poll `predicate` until truthy (bounded); returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


SDK_SRC = str(Path(__file__).resolve().parents[2] / "sdk" / "src")


def subprocess_env(**extra: str) -> dict:
    """Environment for Python subprocesses that import `differential` (installed or from source)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SDK_SRC, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
