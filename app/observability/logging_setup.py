"""Where log lines go and what they look like: text or JSON lines, the request id, no secrets.

Every handler we own (the app's root handler, gunicorn's error and access logs) formats through
`Formatter`, so every line, at every level, passes the same redaction last: the values of the
secret settings (`Variable.secret`), anything shaped like our credentials (`sk_...`, which covers
cluster secrets, access-point tokens and the management secret), Authorization values, AWS secret
keys and database passwords in URLs. SQL_DEBUG statements keep their parameters (job payloads:
what the switch is for) but go through the same redaction, and cluster secrets reach the database
only sealed or hashed anyway.

The request id of the request being served lives in a contextvar (set by request_log.py), so any
record logged while serving it, an unhandled error's traceback included, names it.
"""
from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
from typing import Iterable
from urllib.parse import urlparse

from gunicorn import glogging

from .. import settings as settings_module

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("differential_request_id", default=None)

REDACTED = "[redacted]"
_MIN_LITERAL = 8  # shorter configured values would match ordinary words
_TOKEN = r"[A-Za-z0-9_\-+/=%.~]"  # what a token may be made of (base64, base64url, hex, %-escapes)
# (words one of which the lowered text must hold for the pattern to be tried, pattern, replacement):
# the cheap substring checks spare most lines every regex.
_PATTERNS = (
    # Our credentials: cluster secrets (sk_ + hex), access-point tokens (sk_ap_...), the management
    # secret (MANAGEMENT_SECRET_PREFIX...). Not after a letter or digit: "task_..." is no secret.
    (("sk_", settings_module.MANAGEMENT_SECRET_PREFIX.lower()),
     re.compile(r"(?<![A-Za-z0-9])(sk_|" + re.escape(settings_module.MANAGEMENT_SECRET_PREFIX) + ")" + _TOKEN + "{12,}"),
     r"\1" + REDACTED),
    # A credential after the name it goes by, in a header, a query, a JSON body or a config dump.
    (("authoriz", "api-key", "secret", "token", "passw"),
     re.compile(r"(?i)((?:proxy-)?authorization|x-api-key|api[_-]?secret|management[_-]?secret|metrics[_-]?token"
                r"|secret[_-]?access[_-]?key|aws[_-]?secret[_-]?access[_-]?key|password|passwd|token)"
                r"([\"']?\s*[:=]\s*[\"']?)(?:(basic|bearer|token)\s+)?" + _TOKEN + "+"),
     lambda m: m.group(1) + m.group(2) + (m.group(3) + " " if m.group(3) else "") + REDACTED),
    # A scheme word and a token anywhere else (a token has a digit: "basic configuration" is none).
    (("basic", "bearer"), re.compile(r"(?i)\b(basic|bearer)\s+(?=" + _TOKEN + r"*\d)" + _TOKEN + "{16,}"),
     r"\1 " + REDACTED),
    # A password in a URL: scheme://user:password@host
    (("://",), re.compile(r"(\w+://[^:/@\s\"']*:)[^@\s\"']+@"), r"\1" + REDACTED + "@"),
)


class Redactor:
    """`redact(text)`: the text without the given secret values and anything shaped like one."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._literals = sorted({s for s in secrets if s and len(s) >= _MIN_LITERAL}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for literal in self._literals:
            if literal in text:
                text = text.replace(literal, REDACTED)
        lowered = text.lower()
        for words, pattern, replacement in _PATTERNS:
            if any(word in lowered for word in words):
                text = pattern.sub(replacement, text)
        return text


def secrets_of(settings) -> list[str]:
    """The values of every secret setting (`Variable.secret`), and a database URL's password."""
    values: list[str] = []
    for var in settings_module.VARIABLES:
        if not var.secret:
            continue
        value = getattr(settings, var.field, None)
        if isinstance(value, (tuple, list)):
            values += [str(v) for v in value]
        elif value:
            values.append(str(value))
            if var.name == "DATABASE_URL":
                password = urlparse(str(value)).password
                if password:
                    values.append(password)
    return values


class Formatter(logging.Formatter):
    """Text (`fmt`, with " [request id]" after the logger name when there is one) or one JSON
    object per line; redacted last either way."""

    def __init__(self, redactor: Redactor, *, as_json: bool, fmt: str | None = None, datefmt: str | None = None):
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s", datefmt)
        self.redactor, self.as_json = redactor, as_json

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None) or request_id.get()
        if self.as_json:
            return self._json(record, rid)
        record.rid = f" [{rid}]" if rid else ""
        return self.redactor.redact(super().format(record))

    def _json(self, record: logging.LogRecord, rid: str | None) -> str:
        redact = self.redactor.redact
        line: dict = {"time": _iso(record.created), "level": record.levelname, "logger": record.name,
                      "message": redact(record.getMessage())}
        if rid:  # a client's id is plain, but could be a secret sent in the wrong header
            line["requestId"] = redact(rid)
        fields = getattr(record, "http", None)  # the request line's fields (request_log.py)
        if fields:
            line.update({k: redact(v) if isinstance(v, str) else v for k, v in fields.items()})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, default=str)  # ASCII: whatever the stream's encoding


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


_OURS = "_differential_handler"


def _handle_error(record: logging.LogRecord) -> None:
    """In place of logging's, which prints the record's message and arguments (maybe a secret) raw."""
    kind = sys.exc_info()[0]
    sys.stderr.write(f"a log record of {record.name} ({record.pathname}:{record.lineno}) could not be written: "
                     f"{kind.__name__ if kind else 'error'}\n")


def _thread_died(args: threading.ExceptHookArgs) -> None:
    """An uncaught exception in a thread is logged (formatted, redacted), not printed raw."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread else "?"
    logging.getLogger("app").error("uncaught exception in thread %s", name,
                                   exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def configure(settings) -> None:
    """The root logger's one handler of ours (to stderr), replaced when called again (tests build
    many apps); handlers others added (pytest's) stay."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter(Redactor(secrets_of(settings)), as_json=settings.log_format == "json"))
    handler.handleError = _handle_error
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    if threading.excepthook is threading.__excepthook__:  # not over another's (pytest's, in tests)
        threading.excepthook = _thread_died
    # peewee logs each statement with its parameters (job arguments and results) at DEBUG: only on request.
    level = logging.getLevelName(settings.log_level)
    logging.getLogger("peewee").setLevel(logging.DEBUG if settings.sql_debug else max(level, logging.INFO))


class GunicornLogger(glogging.Logger):
    """gunicorn's logger (gunicorn.conf.py `logger_class`): its error and access logs through
    `Formatter` too, so they are JSON with LOG_FORMAT=json and never hold a secret."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        settings = settings_module.load_or_exit()
        redactor = Redactor(secrets_of(settings))
        as_json = settings.log_format == "json"
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                old = handler.formatter
                handler.setFormatter(Formatter(redactor, as_json=as_json, fmt=getattr(old, "_fmt", None),
                                               datefmt=getattr(old, "datefmt", None)))
                handler.handleError = _handle_error
