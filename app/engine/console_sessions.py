"""Console sign-ins: a session per signed-in browser, kept in the database so that every replica
knows it and signing out ends it everywhere at once.

The cookie holds a random token; the table keeps only its sha256, the session's CSRF token, and the
fingerprint of the management secret it signed in with, so that changing MANAGEMENT_SECRET signs
every session out. Expired rows go when the next session is made (an indexed delete), so the table
never holds more than the sessions of one lifetime.
"""
from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from .. import db
from ..models import ConsoleSession, utcnow
from .ids import secret_hash


@dataclass(frozen=True)
class Session:
    csrf_token: str
    expires_at: dt.datetime


def fingerprint(management_secret: str) -> str:
    return secret_hash("console:" + management_secret)


def create(management_secret: str, lifetime: dt.timedelta) -> tuple[str, Session]:
    """A new session: (the cookie token, shown only now; the session)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session = Session(csrf_token=secrets.token_urlsafe(32), expires_at=now + lifetime)

    def tx() -> None:
        ConsoleSession.delete().where(ConsoleSession.expires_at <= now).execute()
        ConsoleSession.create(token_hash=secret_hash(token), csrf_token=session.csrf_token,
                              secret_fingerprint=fingerprint(management_secret), created_at=now,
                              expires_at=session.expires_at)

    db.unit_of_work(tx)
    return token, session


def lookup(token: str, management_secret: str) -> Session | None:
    """The live session of this cookie token, signed in with this management secret, or None."""
    row = db.unit_of_work(lambda: ConsoleSession.select(ConsoleSession.csrf_token, ConsoleSession.expires_at)
                          .where((ConsoleSession.token_hash == secret_hash(token))
                                 & (ConsoleSession.secret_fingerprint == fingerprint(management_secret))
                                 & (ConsoleSession.expires_at > utcnow())).first(),
                          transaction=False, idempotent=True)
    return None if row is None else Session(row.csrf_token, row.expires_at)


def end(token: str) -> None:
    """Sign out: the session stops working in every process now."""
    db.unit_of_work(lambda: ConsoleSession.delete().where(ConsoleSession.token_hash == secret_hash(token)).execute(),
                    transaction=False, idempotent=True)
