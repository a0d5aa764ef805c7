"""Where the `differential` command finds the management secret.

In order: `--management-secret` or DIFFERENTIAL_MANAGEMENT_SECRET; `--management-secret-file` or
DIFFERENTIAL_MANAGEMENT_SECRET_FILE (a relative path is taken from the current folder). When none
is given and the endpoint is on this machine (a loopback address, as `make run` serves), the local
server's own file: `management-secret.txt` in $DIFFERENTIAL_DATA_DIR if that is set, else in the
first `.differential/` folder found from the current folder upwards (as git finds `.git`). The
local file is never read for an endpoint on another machine: its secret is only for this one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Tuple
from urllib.parse import urlsplit

SECRET_FILE = "management-secret.txt"
DATA_DIR = ".differential"  # the control-plane's default DIFFERENTIAL_DATA_DIR
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_WHAT_TO_PASS = ("pass --management-secret / --management-secret-file or set DIFFERENTIAL_MANAGEMENT_SECRET "
                 "/ DIFFERENTIAL_MANAGEMENT_SECRET_FILE")


class SecretNotFound(Exception):
    """No management secret could be found or read; the message says where we looked."""


def is_local(endpoint: str) -> bool:
    """True for an endpoint on this machine's loopback interface (any port)."""
    try:
        return urlsplit(endpoint).hostname in _LOOPBACK
    except ValueError:
        return False


def read_secret_file(path: "str | Path", cwd: Path) -> str:
    """The secret in `path` (relative to `cwd`), stripped; SecretNotFound names the absolute path."""
    full = Path(cwd, path).absolute()
    try:
        with open(full, encoding="utf-8") as f:
            secret = f.read().strip()
    except OSError as e:
        raise SecretNotFound(f"cannot read the management secret file {full}: {e.strerror}") from None
    if not secret:
        raise SecretNotFound(f"the management secret file {full} is empty")
    return secret


def local_secret_file(env: Mapping[str, str], cwd: Path) -> Tuple[Optional[Path], str]:
    """The local server's secret file, or None and why not (which place was looked at)."""
    data_dir = env.get("DIFFERENTIAL_DATA_DIR")
    if data_dir:
        path = Path(cwd, data_dir).absolute() / SECRET_FILE
        return (path, "") if path.is_file() else (None, f"{path} (from DIFFERENTIAL_DATA_DIR) does not exist")
    for folder in (cwd, *cwd.parents):
        if (folder / DATA_DIR).is_dir():
            path = folder / DATA_DIR / SECRET_FILE
            return (path, "") if path.is_file() else (None, f"{path} does not exist")
    return None, f"no {DATA_DIR}/ folder in {cwd} or any folder above it"


def find(endpoint: str, secret: Optional[str] = None, secret_file: Optional[str] = None,
         env: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None) -> str:
    """The management secret for `endpoint`. `secret` and `secret_file` are the command-line
    flags; the environment variables come after them."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    secret = secret or env.get("DIFFERENTIAL_MANAGEMENT_SECRET")
    if secret:
        return secret
    secret_file = secret_file or env.get("DIFFERENTIAL_MANAGEMENT_SECRET_FILE")
    if secret_file:
        return read_secret_file(secret_file, cwd)
    if not is_local(endpoint):
        raise SecretNotFound(f"no management secret for {endpoint}: {_WHAT_TO_PASS} (the local server's "
                             f"{DATA_DIR}/{SECRET_FILE} is only used for an endpoint on this machine)")
    path, why_not = local_secret_file(env, cwd)
    if path is None:
        raise SecretNotFound(f"no management secret: {_WHAT_TO_PASS}; the local server's {SECRET_FILE} "
                             f"was not found either: {why_not}")
    return read_secret_file(path, cwd)
