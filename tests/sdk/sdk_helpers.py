"""Helpers shared by the SDK tests (imported as a plain module: tests/sdk is on sys.path)."""
from __future__ import annotations

import os
from pathlib import Path

SDK_SRC = str(Path(__file__).resolve().parents[2] / "sdk" / "src")


def subprocess_env(**extra: str) -> dict:
    """Environment for Python subprocesses that import `differential` (installed or from source)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SDK_SRC, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
