"""Cluster API secrets at rest: sealed with a key kept outside the database.

`GET /clusters` must show each cluster's secret, so the database cannot keep only its hash (which
is what requests authenticate against). It keeps the secret sealed (Fernet: AES-128-CBC + HMAC)
under `SECRETS_KEY`, and the id of the key that sealed it, so a copy of the database alone (a
backup, a dump, a stolen SQLite file) hands out no working secret.

Keys rotate: `SECRETS_KEY` is a list, newest first. The newest seals; every key unseals; at
start-up rows sealed by an older key are sealed again by the newest (engine/clusters.py). Without
`SECRETS_KEY` (not allowed in production) the key lives in the data folder, created once, 0600.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets as _random
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "secrets-key.txt"


class SealingError(RuntimeError):
    """A sealed secret this process cannot open: its key is not in SECRETS_KEY."""


def new_key() -> str:
    return base64.urlsafe_b64encode(_random.token_bytes(32)).decode()


def parse_keys(value: str) -> tuple[str, ...]:
    """SECRETS_KEY's value: keys separated by commas or spaces, each 32 bytes in base64 (either
    alphabet, so `openssl rand -base64 32` makes one). Raises ValueError saying what is wrong."""
    keys = []
    for n, word in enumerate(value.replace(",", " ").split(), start=1):
        try:
            raw = base64.b64decode(word.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"must be keys of 32 bytes in base64, newest first, separated by commas "
                             f"(key {n} is not; make one with: openssl rand -base64 32)")
        keys.append(base64.urlsafe_b64encode(raw).decode())
    if not keys:
        raise ValueError("holds no key")
    return tuple(dict.fromkeys(keys))


def key_id(key: str) -> str:
    """A short public name of a key (stored beside each sealed secret; reveals nothing of the key)."""
    return hashlib.sha256(b"differential-secrets-key:" + key.encode()).hexdigest()[:16]


class Box:
    """Seals with the newest key; opens with whichever key sealed."""

    def __init__(self, keys: tuple[str, ...]):
        if not keys:
            raise ValueError("a Box needs at least one key")
        self._fernets = {key_id(k): Fernet(k) for k in keys}
        self.primary_id = key_id(keys[0])
        self.key_ids = tuple(self._fernets)

    def seal(self, secret: str) -> tuple[str, str]:
        """(token, id of the key that sealed it)."""
        return self._fernets[self.primary_id].encrypt(secret.encode()).decode(), self.primary_id

    def unseal(self, token: str, sealed_by: str) -> str:
        fernet = self._fernets.get(sealed_by)
        if fernet is None:
            raise SealingError(f"a cluster secret is sealed with key {sealed_by}, which SECRETS_KEY does not hold "
                               f"(it holds {', '.join(self.key_ids)}): put that key back in SECRETS_KEY, after the newest")
        try:
            return fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SealingError(f"a cluster secret sealed with key {sealed_by} does not open with it "
                               "(the row or the key was altered)") from None


def key_file_keys(data_dir: str) -> tuple[tuple[str, ...], Path]:
    """The keys in the data folder's key file, creating it (0600) with a new key if it is missing.

    Several processes may start at once (gunicorn workers): the file appears whole or not at all
    (written aside, then linked into place; the loser of a race reads the winner's)."""
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secrets-key.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(new_key() + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    try:
        return parse_keys(path.read_text()), path
    except ValueError as exc:
        raise ValueError(f"{path} {exc}") from None
