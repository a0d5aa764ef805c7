"""Two control-planes side by side under the same scenario at the same moment, to compare two trees.

    .venv/bin/python bench/side_by_side.py --before /tmp/before            # burst10k, 4 rounds
    .venv/bin/python bench/side_by_side.py --before /tmp/before --rounds 6 --only burst1k
    .venv/bin/python bench/side_by_side.py --before /tmp/before --before-env GUNICORN_THREADS=256

On this shared host one app's burst10k ran at 267 to 570 calls/s within an hour, drifting for minutes
at a time, so runs one after the other (A, B, A, B) compare the host's moments more than the apps:
three such pairs once said a change saved 8 % and six more said nothing. Here `--before` (a checkout,
`git archive <commit> | tar -x -C /tmp/before`) and this tree each get a control-plane on the same
throwaway PostgreSQL (two databases), and every round starts the same `bench/run.py` scenario
against both at once, so the host's moment is shared. They compete for the same two cores, so
read the control-plane CPU per call, not the calls/s (the faster one finishes first and the other
then has the host to itself). Each round prints both; the end prints the sums and the ratio.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.stack import Stack  # noqa: E402


def _env(pairs: list[str]) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in pairs)


def _round(planes: list[tuple[str, Stack, dict]], scenario: str, folder: Path, n: int) -> dict[str, dict]:
    started = {}
    for tag, stack, cluster in planes:
        out = folder / f"{tag}-{n}.json"
        argv = [sys.executable, str(BENCH / "run.py"), "--endpoint", stack.endpoint, "--secret", cluster["apiSecret"],
                "--cp-pid", str(stack.pids[0]), "--only", scenario, "--out", str(out)]
        started[tag] = (subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), out)
    results = {}
    for tag, (proc, out) in started.items():
        _, err = proc.communicate()
        if not out.exists():
            raise SystemExit(f"side_by_side: the {tag} run wrote no result:\n{err[-2000:]}")
        results[tag] = json.loads(out.read_text())["results"][0]
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="the checkout to compare this tree with")
    p.add_argument("--before-env", action="append", default=[], help="KEY=VALUE for the before control-plane")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for this tree's control-plane")
    p.add_argument("--only", default="burst10k", help="the bench/run.py scenario (default burst10k)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", type=Path, help="JSON of every round (default: bench/results/side-by-side-<time>.json)")
    a = p.parse_args()

    before = Stack.start(durable=True, root=a.before, env=_env(a.before_env), database="side_before")
    try:
        after = Stack.start(durable=True, env=_env(a.env), database="side_after")
    except Exception:
        before.stop()
        raise
    rounds: list[dict[str, dict]] = []
    try:
        planes = [("before", before, before.create_cluster("before")), ("after", after, after.create_cluster("after"))]
        with tempfile.TemporaryDirectory() as folder:
            for n in range(a.rounds):
                got = _round(planes if n % 2 == 0 else planes[::-1], a.only, Path(folder), n)
                rounds.append(got)
                print(f"round {n + 1}: " + " | ".join(
                    f"{tag} {r['calls_per_s']:.1f} calls/s, CP {r['control_plane']['cpu_s']:.2f} s "
                    f"({1000 * r['control_plane']['cpu_s'] / r['calls']:.2f} ms a call), lost {r['lost']}, "
                    f"twice {r['duplicated']}" for tag, r in sorted(got.items(), reverse=True)), flush=True)
    finally:
        before.stop()
        after.stop()
    cpu = {tag: sum(r[tag]["control_plane"]["cpu_s"] for r in rounds) for tag in ("before", "after")}
    calls = sum(r["after"]["calls"] for r in rounds)
    print(f"control-plane CPU over {len(rounds)} rounds: before {cpu['before']:.2f} s, after {cpu['after']:.2f} s "
          f"({1000 * cpu['before'] / calls:.2f} -> {1000 * cpu['after'] / calls:.2f} ms a call, "
          f"after/before {cpu['after'] / cpu['before']:.3f})")
    bad = sum(r[t]["lost"] + r[t]["duplicated"] + r[t]["mismatched"] for r in rounds for t in r)
    out = a.out or BENCH / "results" / f"side-by-side-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "before": str(a.before), "rounds": rounds}, indent=2))
    print(f"written: {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
