"""What the bench commands share when they report: the hot tables' sizes, the result file, numbers.

Used by longrun.py, tenants.py and replicas.py (run.py keeps its own table format)."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

HOT_TABLES = ("jobs", "events", "metric_rollups", "machines", "workers")


def table_stats(stack, tables: tuple[str, ...] = HOT_TABLES) -> dict[str, dict]:
    """pg_total_relation_size (table + indexes + toast), index size, live and dead tuples, and how
    many (auto)vacuums have run on each: a latency episode can be set beside them, not guessed."""
    names = ",".join(f"'{t}'" for t in tables)
    rows = stack.psql(
        "SELECT relname, pg_total_relation_size(relid), pg_indexes_size(relid), n_live_tup, n_dead_tup, "
        f"vacuum_count + autovacuum_count FROM pg_stat_user_tables WHERE relname IN ({names}) ORDER BY relname")
    return {name: {"total_mb": round(total / 2**20, 2), "indexes_mb": round(idx / 2**20, 2), "live": live,
                   "dead": dead, "vacuums": vacuums} for name, total, idx, live, dead, vacuums in rows}


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()


def write_result(kind: str, doc: dict, out: str | None, started: dt.datetime) -> Path:
    """bench/results/<kind>-<timestamp>.json (or `out`), with the command, machine and commit."""
    from run import machine_info

    doc = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
           "started": started.isoformat(timespec="seconds"), "commit": commit(), "machine": machine_info(), **doc}
    path = Path(out) if out else BENCH / "results" / f"{kind}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


def fmt(v, nd: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
