"""What every bench command stands on: a throwaway PostgreSQL 15 and the real gunicorn control-plane.

PostgreSQL keeps its default durability (fsync, synchronous_commit, full_page_writes on), as every
user runs it. `--unsafe-pg` turns the three off, as the test suite does; figures made that way
include no disk flush and must say so (`Stack.durable` is written into every result file).

    stack = Stack.start(durable=True, replicas=1, env={"WEB_CONCURRENCY": "2"})
    cluster = stack.create_cluster("bench")        # {"id", "apiSecret", ...}
    stack.endpoints, stack.pids, stack.pg_pid
    stack.stop()
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unsafe-pg", action="store_true",
                   help="UNSAFE: PostgreSQL with fsync, synchronous_commit and full_page_writes off "
                        "(no disk flush in any figure; never how a user runs it)")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the started control-plane")
    p.add_argument("--app-root", type=Path, help="run the app of this checkout (to compare commits in one run)")


def env_from(a: argparse.Namespace) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in a.env)


@dataclass
class Stack:
    durable: bool
    database_url: str
    pg_pid: int | None
    planes: list = field(default_factory=list)  # tests.support.server.ControlPlane, one per replica

    @classmethod
    def start(cls, *, durable: bool = True, replicas: int = 1, env: dict[str, str] | None = None,
              database: str = "bench", root: Path | None = None) -> "Stack":
        """PostgreSQL (its own server: a TEST_DATABASE_URL of the caller's is not reused, since its
        durability is unknown), a fresh database, and `replicas` control-planes on it, one secret.
        `root`: run the app of another checkout (e.g. `git worktree add /tmp/before <commit>`)."""
        from tests.support import postgres
        from tests.support.server import ControlPlane, new_management_secret

        os.environ.pop(postgres.ENV_URL, None)
        postgres.ensure_server(durable=durable)
        url = postgres.create_database(database)
        secret = new_management_secret()
        stack = cls(durable=durable, database_url=url, pg_pid=postgres.server_pid())
        try:
            for _ in range(replicas):
                stack.planes.append(ControlPlane(url, management_secret=secret, root=root,
                                                 env={"LOG_LEVEL": "warning", **(env or {})}).start())
        except Exception:
            stack.stop()
            raise
        return stack

    @property
    def endpoints(self) -> list[str]:
        return [p.url for p in self.planes]

    @property
    def endpoint(self) -> str:
        return self.planes[0].url

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.planes]

    @property
    def management_headers(self) -> dict[str, str]:
        return self.planes[0].management_headers

    def create_cluster(self, description: str = "bench") -> dict:
        return self.planes[0].create_cluster(description)

    def psql(self, sql: str) -> list[tuple]:
        """Rows of one statement on the bench database (sizes, dead tuples)."""
        import psycopg2

        conn = psycopg2.connect(self.database_url)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def stop(self) -> None:
        for p in self.planes:
            try:
                p.stop()
            except Exception as exc:  # keep stopping the others
                print(f"stopping {p.url}: {exc}", file=sys.stderr)
