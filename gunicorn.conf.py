"""gunicorn settings for the control-plane (production and `python -m app`).

Thread workers: a long poll parks a thread on a condition variable (holding no database
connection), so a few hundred threads per worker hold that many polls for little memory.
"""
import os
import signal
import sys


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        sys.exit(f"{name} must be a whole number above 0 (got {raw!r}); unset it to use {default}")
    return value


bind = f"{os.environ.get('BIND_HOST', '0.0.0.0')}:{os.environ.get('PORT', '4000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))  # gunicorn itself reads it first (a bad value fails there)
threads = _positive_int("GUNICORN_THREADS", 256)
# Long polls last up to 20 s; a worker is only killed if silent much longer than that.
timeout = 60
graceful_timeout = 25
# The server must not be the side that closes an idle connection: a client that reuses one just
# as it closes gets "other side closed", and the published SDK's caller exits on that (its results
# poller does not catch fetch errors). Under the SDK's 10,000-call storm Node's fetch kept thousands
# of connections idle past 75 s and reused one as gunicorn closed it (bench/README.md). 600 s is
# undici's own longest keep-alive; proxies in front close sooner, which is safe.
keepalive = _positive_int("KEEPALIVE_SECONDS", 600)
# Connections (mostly idle keep-alives and parked polls) per worker; past this gunicorn stops
# accepting and clients time out connecting (the published SDK opens one per status poll).
worker_connections = 10000
backlog = 4096
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
# One shared control socket per user would make concurrent instances (replicas, tests) collide.
control_socket_disable = True
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def _state(worker):
    return getattr(getattr(worker, "wsgi", None), "extensions", {}).get("differential")


def post_worker_init(worker):
    # On SIGTERM, end long polls at once (they answer what they have), so in-flight requests
    # finish well inside the graceful timeout and nothing accepted is lost.
    original = worker.handle_exit

    def handle_exit(sig, frame):
        state = _state(worker)
        if state is not None:
            state.stopping.set()
            from app.engine.signals import hub

            hub.wake_all()
        original(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)


def worker_exit(server, worker):
    state = _state(worker)
    if state is not None:
        state.shutdown()


def on_starting(server):
    # Check the settings once in the master, so a bad variable stops the server with its name
    # instead of workers failing to boot over and over.
    from app import allocator, settings

    settings.load_or_exit()
    # Before any worker exists, so every worker and its threads inherit it (app/allocator.py).
    allocator.tune()
