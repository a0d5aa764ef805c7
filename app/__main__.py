"""`python -m app` (`make run`): run the control-plane locally on the embedded default (an SQLite file).

Creates a management secret and the key that seals cluster secrets on first run (kept in the data
folder, readable only by you), prints the endpoint, where they and the database are and how to try it, then serves with gunicorn
exactly as production does. Its defaults differ from production's only where
`Variable.local_default` says so (app/settings.py); it hands gunicorn the resolved values.
"""
from __future__ import annotations

import argparse
import errno
import os
import secrets
import shlex
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from . import db, sealing, settings as settings_module

ROOT = Path(__file__).resolve().parent.parent


def _management_secret(data_dir: Path) -> tuple[str, Path]:
    db.make_private(str(data_dir), folder=True)
    path = data_dir / "management-secret.txt"
    if path.exists():
        db.make_private(str(path), folder=False)
        return path.read_text().strip(), path
    secret = settings_module.MANAGEMENT_SECRET_PREFIX + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret, path


def _port_in_use(host: str, port: int) -> bool:
    """Whether gunicorn would find the address taken (it would retry for 5 s, then fail)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return False  # gunicorn reports a bad host itself
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _shown_database(settings: settings_module.Settings) -> str:
    if not settings.uses_postgres:
        return f"SQLite file {Path(settings.sqlite_path).resolve()}"
    url = urlparse(settings.database_url)
    if url.password:  # the banner lands in terminals and logs
        url = url._replace(netloc=url.netloc.replace(":" + url.password + "@", ":***@", 1))
    return url.geturl()


def _secrets_key(settings: settings_module.Settings, data_dir: Path) -> str:
    """Where the key sealing cluster secrets comes from (the app reads the same file, app/sealing.py)."""
    if settings.secrets_key:
        return "from the SECRETS_KEY environment variable"
    return str(sealing.key_file_keys(str(data_dir))[1])


def _banner(endpoint: str, secret_file: Path | None, database: str, secrets_key: str) -> str:
    cli = Path(sys.executable).parent / "differential"
    default_endpoint = endpoint == "http://127.0.0.1:4000"
    endpoint_flag = "" if default_endpoint else f" --endpoint {endpoint}"
    if secret_file is None:
        where = "from the MANAGEMENT_SECRET environment variable"
        credential = "$MANAGEMENT_SECRET"
        cli_line = f'DIFFERENTIAL_MANAGEMENT_SECRET="$MANAGEMENT_SECRET" {cli} clusters create{endpoint_flag}'
    else:
        where = str(secret_file)
        credential = f"$(cat {shlex.quote(str(secret_file))})"
        if default_endpoint and secret_file == ROOT / ".differential" / "management-secret.txt":
            cli_line = f"{cli} clusters create    (it finds this secret file by itself)"
        else:
            cli_line = f"{cli} clusters create{endpoint_flag} --management-secret-file {shlex.quote(str(secret_file))}"
    return (f"Differential control-plane\n"
            f"  endpoint:          {endpoint}\n"
            f"  console:           {endpoint}/console/ (sign in with the management secret)\n"
            f"  management secret: {where}\n"
            f"  database:          {database}\n"
            f"  secrets key:       {secrets_key}\n"
            f"  try: curl -X POST -H \"Authorization: Basic {credential}\" {endpoint}/clusters\n"
            f"  cli: {cli_line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="address to listen on (default: BIND_HOST, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default: PORT, else 4000)")
    args = parser.parse_args(argv)

    settings = settings_module.load_or_exit(local=True)
    host = args.host or settings.bind_host
    port = settings.port if args.port is None else args.port
    if _port_in_use(host, port):
        print(f"differential: port {port} on {host} is already in use (another `make run`?); "
              f"choose another with PORT, e.g. PORT={port + 1} make run", file=sys.stderr)
        raise SystemExit(1)

    env = dict(os.environ)  # the child's environment: everything, plus the resolved values below
    for var in settings_module.VARIABLES:
        if var.group == "server":
            env[var.name] = str(getattr(settings, var.field))
    env["BIND_HOST"], env["PORT"] = host, str(port)
    data_dir = Path(settings.data_dir).resolve()
    env["DIFFERENTIAL_DATA_DIR"] = str(data_dir)
    secret_file = None
    if not settings.management_secret:
        env["MANAGEMENT_SECRET"], secret_file = _management_secret(data_dir)
    db.make_private(str(data_dir), folder=True)
    key_source = _secrets_key(settings, data_dir)
    print(_banner(f"http://{host}:{port}", secret_file, _shown_database(settings), key_source), flush=True)
    os.chdir(ROOT)
    os.execve(sys.executable, [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app.wsgi:app"], env)


if __name__ == "__main__":
    main()
