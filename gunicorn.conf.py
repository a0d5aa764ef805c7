"""gunicorn settings for the control-plane (production and `python -m app`).

Thread workers: gthread's, changed (app/server/worker.py) so that a thread only gets a request
once it has arrived, and lets go of it while a long poll waits: slow and silent clients and
waiting polls stay in the event loop (under deadlines), not in threads, and hold no database
connection.
"""
import atexit
import os
import shutil
import signal
import tempfile

# Prometheus multiprocess mode (app/observability/prometheus.py): every worker writes its counters
# to files of its own in one directory per control-plane instance, and a scrape sums them all. Set
# before `app` is imported (here, in the master): the client picks its value store at import. A
# fresh temp dir unless PROMETHEUS_MULTIPROC_DIR is given (then emptied: old files would count twice).
_PROMETHEUS_OWNER = "DIFFERENTIAL_PROMETHEUS_MASTER"  # "<pid>:<1 if it made the dir>": a reload keeps it
# gunicorn loads this file as `__config__`; a test that loads it must not change its own environment.
if __name__ == "__config__" and os.environ.get(_PROMETHEUS_OWNER, ":").split(":")[0] != str(os.getpid()):
    _made = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if _made:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="differential-prometheus-")
    else:
        _dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        os.makedirs(_dir, exist_ok=True)
        for _name in os.listdir(_dir):
            if _name.endswith(".db"):
                os.remove(os.path.join(_dir, _name))
    os.environ[_PROMETHEUS_OWNER] = f"{os.getpid()}:{int(_made)}"
    if _made:  # at the master's exit (a bad setting's too); never a worker's: they exit through here too
        atexit.register(lambda pid, path: os.getpid() == pid and shutil.rmtree(path, ignore_errors=True),
                        os.getpid(), os.environ["PROMETHEUS_MULTIPROC_DIR"])

from app import settings as _settings_module  # noqa: E402
from app.server import fds as _fds, worker as _worker  # noqa: E402

# Every variable is parsed in app/settings.py (group "server"); a bad one stops the master here,
# naming it, before any worker is started.
_settings = _settings_module.load_or_exit()

bind = f"{_settings.bind_host}:{_settings.port}"  # BIND_HOST:PORT
worker_class = _worker.configured(_worker.Limits.of(_settings))
# gunicorn reads WEB_CONCURRENCY itself before this file (a non-number fails there first).
workers = _settings.web_concurrency
threads = _settings.gunicorn_threads
# Long polls last up to 20 s; a worker is only killed if silent much longer than that.
timeout = 60
graceful_timeout = 25
# The server must not be the side that closes an idle connection: a client that reuses one just
# as it closes gets "other side closed", and the published SDK's caller exits on that (its results
# poller does not catch fetch errors). Under the SDK's 10,000-call storm Node's fetch kept thousands
# of connections idle past 75 s and reused one as gunicorn closed it (bench/README.md). 600 s is
# undici's own longest keep-alive; proxies in front close sooner, which is safe.
keepalive = _settings.keepalive_seconds
# Connections (mostly idle keep-alives and parked polls) per worker; past this gunicorn stops
# accepting and clients time out connecting (the published SDK opens one per status poll).
# 10,000 silent sockets from one client must fit beside normal traffic, each one a file
# descriptor: the soft limit is raised to the hard one here (the workers inherit it), and the
# count is cut to fit if even that is lower.
worker_connections = _fds.worker_connections(20000, _fds.raise_soft_limit())
backlog = 4096
# The app writes its own line per request (REQUEST_LOG, app/observability/request_log.py);
# gunicorn's access log is an extra, off unless ACCESS_LOG names where; its lines end with the
# request id, as the app's do. Both logs go through the app's formatter (LOG_FORMAT, redaction).
# gunicorn's %(u)s (the user of a Basic credential) is left out: it base64-decodes the header.
accesslog = _settings.access_log or None
access_log_format = '%(h)s %(l)s - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %({x-request-id}o)s'
errorlog = "-"
logger_class = "app.observability.logging_setup.GunicornLogger"
# One shared control socket per user would make concurrent instances (replicas, tests) collide.
control_socket_disable = True
loglevel = _settings.log_level.lower()


def _state(worker):
    return getattr(getattr(worker, "wsgi", None), "extensions", {}).get("differential")


def post_worker_init(worker):
    from app import collector

    # The app is loaded and no request has come: what start-up made is frozen (app/collector.py).
    collector.tune()
    # On SIGTERM, end long polls at once (they answer what they have), so in-flight requests
    # finish well inside the graceful timeout and nothing accepted is lost.
    original = worker.handle_exit

    def handle_exit(sig, frame):
        state = _state(worker)
        if state is not None:
            state.begin_shutdown()
        original(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)


def worker_exit(server, worker):
    state = _state(worker)
    if state is not None:
        state.shutdown()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    # Its counters stay (a restart loses no counts); its live gauges (parked polls) go.
    multiprocess.mark_process_dead(worker.pid)


def on_starting(server):
    from app import allocator

    # Before any worker exists, so every worker and its threads inherit it (app/allocator.py).
    allocator.tune()
