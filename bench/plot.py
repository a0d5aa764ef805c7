"""The long run's curve as a PNG: latency p50/p99, calls/s, control-plane RSS and the hot tables'
sizes over time, one panel each, from the samples bench/longrun.py writes.

    .venv/bin/python bench/plot.py bench/results/longrun-<ts>.json [--png bench/longrun.png]

matplotlib is an optional extra (requirements/bench.txt): without it longrun.py still runs and
records "skipped: ..." where the PNG's path would be; this command then draws it from the JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def longrun_png(doc: dict, path: Path) -> str:
    """Draw the curve of a longrun result into `path`; returns the path, or why it was skipped."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return "skipped: matplotlib is not installed (.venv/bin/python -m pip install -r requirements/bench.txt)"
    samples = doc.get("samples") or []
    if not samples:
        return "skipped: no samples"
    t = [s["t_s"] / 60 for s in samples]
    opts = doc.get("options", {})

    def table(name: str, key: str) -> list:
        return [s["tables"].get(name, {}).get(key) for s in samples]

    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    ax = axes[0]
    ax.plot(t, [s["p50_ms"] for s in samples], label="p50")
    ax.plot(t, [s["p99_ms"] for s in samples], label="p99")
    ax.set_ylabel("latency ms")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")
    ax.set_title(f"longrun: {opts.get('rate', '?'):g} calls/s for {opts.get('minutes', '?'):g} min, "
                 f"retention {opts.get('retention_s', '?'):g} s, PostgreSQL "
                 f"{'durable' if doc.get('postgres_durable') else 'UNSAFE'}; commit {doc.get('commit', '?')}",
                 fontsize=10)
    ax = axes[1]
    ax.plot(t, [s["calls_per_s"] for s in samples], label="finished calls/s")
    ax.set_ylabel("calls/s")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(t, [s["cp_cores"] for s in samples], color="tab:red", alpha=0.6, label="control-plane cores")
    ax2.plot(t, [s["pg_cores"] for s in samples], color="tab:purple", alpha=0.6, label="PostgreSQL cores")
    ax2.set_ylabel("CPU cores")
    ax2.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], loc="lower left", fontsize=8)
    ax = axes[2]
    ax.plot(t, [s["cp_rss_mb"] for s in samples], label="control-plane RSS (sum over the gunicorn tree)")
    ax.plot(t, [s["harness_rss_mb"] for s in samples], label="harness RSS")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[3]
    for name in ("jobs", "events"):
        ax.plot(t, table(name, "total_mb"), label=f"{name} (table + indexes)")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("minutes")
    ax3 = ax.twinx()
    ax3.plot(t, table("jobs", "live"), color="tab:green", alpha=0.5, linestyle="--", label="jobs live rows")
    ax3.plot(t, table("jobs", "dead"), color="tab:gray", alpha=0.5, linestyle=":", label="jobs dead rows")
    ax3.plot(t, table("events", "live"), color="tab:brown", alpha=0.5, linestyle="--", label="events live rows")
    ax3.set_ylabel("rows")
    ax3.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + ax3.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", help="a bench/results/longrun-<ts>.json")
    p.add_argument("--png", help="default: the JSON's path with .png")
    a = p.parse_args()
    src = Path(a.json)
    out = longrun_png(json.loads(src.read_text()), Path(a.png) if a.png else src.with_suffix(".png"))
    print(out)
    return 0 if not out.startswith("skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
