"""`python -m app`: run the control-plane locally on the embedded default (an SQLite file).

Creates a management secret on first run (kept in the data folder, readable only by you), prints
the endpoint and where the secret is, then serves with gunicorn exactly as production does.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from . import settings as settings_module

ROOT = Path(__file__).resolve().parent.parent


def _management_secret(data_dir: Path) -> tuple[str, Path]:
    path = data_dir / "management-secret.txt"
    if path.exists():
        return path.read_text().strip(), path
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = "sk_management_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret, path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "4000")))
    args = parser.parse_args(argv)

    settings = settings_module.load_or_exit()
    env = dict(os.environ)
    data_dir = Path(settings.data_dir).resolve()
    env["DIFFERENTIAL_DATA_DIR"] = str(data_dir)
    if settings.management_secret:
        where = "the MANAGEMENT_SECRET environment variable"
    else:
        secret, path = _management_secret(data_dir)
        env["MANAGEMENT_SECRET"] = secret
        where = str(path)
    database = settings.database_url if settings.uses_postgres else f"SQLite file {settings.sqlite_path}"
    env["PORT"] = str(args.port)
    env["BIND_HOST"] = args.host
    env.setdefault("WEB_CONCURRENCY", "1")
    print(f"Differential control-plane\n  endpoint:          http://{args.host}:{args.port}\n"
          f"  management secret: {where}\n  database:          {database}\n"
          f"  try: curl -X POST -H \"Authorization: Basic $(cat {where if not settings.management_secret else '...'})\" "
          f"http://{args.host}:{args.port}/clusters", flush=True)
    os.chdir(ROOT)
    os.execve(sys.executable, [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app.wsgi:app"], env)


if __name__ == "__main__":
    main()
