"""gunicorn's gthread worker, changed so that slow and silent clients and waiting long polls hold no thread.

gthread gives a connection a thread once it is readable; the thread then blocks while the client
trickles its head or body, and every other request, /live too, waits behind it in one FIFO. Here:

- The event loop reads each request's head, and a body of up to BODY_LIMIT, with non-blocking
  reads into a buffer of the connection; only a complete request goes to a thread, whose parser
  reads those bytes first (source.RequestSource). A bigger body is read in the thread.
- Reading a request (head and body, loop and thread alike) has a deadline, REQUEST_READ_SECONDS
  from its first byte; past it the client gets 408 and the connection closes. Serving has none:
  a long poll reads nothing while it waits.
- A connection that never starts a request is closed after PENDING_CONNECTION_SECONDS (kept-alive
  ones idle for KEEPALIVE_SECONDS), or sooner, oldest first, when the worker is at its connection
  limit and needs the room; closing lingers in the loop, not in a blocked call. The lifetime is
  long on purpose: the published SDK opens connections and, busy, may write its request to one
  a minute later; closing it first kills the SDK ("other side closed"), as closing an idle
  kept-alive one would. Waiting costs a descriptor and a few KB, no thread.
- Ready requests are served round-robin per credential (lanes.FairPool); GET /live has its own
  two threads, so it never waits behind polls or other tenants.
- A long poll that has to wait comes back from the app as a parked poll (api/parking.py): its
  thread is free at once, and the connection waits in the loop (PARKED) until the poll's
  subscription wakes or its wait ends, then the poll takes one more step in a pool thread, which
  parks it again or sends its answer. So the connections bound the polls a process holds, not
  its threads (1,000 tenants each with a worker and a caller waiting: bench/README.md). A parked
  client that closes gives its poll up at once, places and all.
- gunicorn's own error answers (400, 414, 431, ...) are JSON in the app's shape (answers.py).

Only plain HTTP/1.x is handled this way (TLS ends at the proxy in front); with TLS, HTTP/2 or the
PROXY protocol configured, the worker behaves exactly as gthread, and says so.
"""
from __future__ import annotations

import errno
import heapq
import html
import itertools
import os
import queue
import re
import selectors
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.errors import UnsupportedTransferCoding
from gunicorn.workers import gthread

from .. import db
from ..api import parking
from ..observability import request_log
from . import answers, head as heads, plain, response, settled
from .lanes import FairPool
from .poller import Poller
from .source import ReadDeadline, RequestSource

# What the loop buffers of one request: a head up to HEAD_LIMIT (past it, 431), a body up to
# BODY_LIMIT (a bigger one is read in the thread, under the same deadline). The buffers of all
# connections together stay under BUFFER_BUDGET: a request that would grow them past it gets 503.
HEAD_LIMIT = 32 * 1024
BODY_LIMIT = 64 * 1024
BUFFER_BUDGET = 64 * 1024 * 1024
RECV_SIZE = 64 * 1024
ACCEPT_BATCH = 256  # accepts per wake-up: a burst of connects must not wait one select() each
LIVE_THREADS = 2
LOOP_FIRST_EVENTS = 64  # ready sockets at once that pause the request threads (wait_for_and_dispatch_events)
CLOSE_LINGER = 2.0  # how long a closing connection's unread input is drained (as gunicorn does)
CLOSE_DRAIN_MAX = 64 * 1024


def _http_date_cache():
    """gunicorn formats the Date header of every response with email.utils (about 9 µs); it
    changes once a second, so each worker formats it once a second."""
    latest = [-1, ""]
    formatted = util.http_date

    def http_date(timestamp=None):
        if timestamp is not None:
            return formatted(timestamp)
        now = int(time.time())
        if latest[0] != now:
            latest[1] = formatted(now)
            latest[0] = now
        return latest[1]
    return http_date


util.http_date = _http_date_cache()
response.install()

# Connection states. The waiting ones are in the loop's selector and in self.waiting[state],
# ordered by expiry (each state has one lifetime, so insertion order is expiry order). A PARKED
# one holds a long poll waiting for its answer (api/parking.py): in the selector, to see its
# client leave, and in the timers, to resume when its wait is over.
NEW, IDLE, READING, CLOSING = "new", "idle", "reading", "closing"
BUSY, CLOSED, PARKED = "busy", "closed", "parked"
CLIENT_CLOSED = 499  # the status a parked poll's request log line and metrics get when its client left


@dataclass
class _Held:
    """A request whose answer is a parked poll: what sending the answer later needs."""

    req: object
    resp: wsgi.Response
    environ: dict
    poll: parking.ParkedPoll
    started: datetime
    park: int = field(default=0)  # which park of the poll a wake-up or a timer is for


@dataclass(frozen=True)
class Limits:
    read_seconds: float  # REQUEST_READ_SECONDS
    pending_seconds: float  # PENDING_CONNECTION_SECONDS

    @classmethod
    def of(cls, settings) -> "Limits":
        return cls(settings.request_read_seconds, settings.pending_connection_seconds)


def configured(limits: Limits) -> type:
    """The worker class with these limits (gunicorn.conf.py sets it as `worker_class`)."""
    return type("ThreadWorker", (ThreadWorker,), {"limits": limits, "__module__": __name__})


class _Socket(socket.socket):
    """A connection's socket, blocking for good: the loop reads and writes it with MSG_DONTWAIT,
    the threads plainly. gthread switches the socket's mode twice a request (blocking in the
    thread, non-blocking in the loop), and a mode switch is a system call that hands the GIL on:
    with 24 threads the hand-offs, not the switches, were the cost. Setting the mode it already
    has does nothing here."""

    __slots__ = ()

    def setblocking(self, flag: bool) -> None:
        if (self.gettimeout() is None) != bool(flag):
            super().setblocking(flag)


def _accept(listener: socket.socket) -> tuple[_Socket, object]:
    """socket.accept, with the connection as a _Socket (blocking, as accept4 made it)."""
    fd, addr = listener._accept()
    return _Socket(listener.family, listener.type, listener.proto, fileno=fd), addr


class Conn(gthread.TConn):
    def __init__(self, cfg, sock, client, server):
        super().__init__(cfg, sock, client, server)
        sock.setblocking(True)  # gthread's made it non-blocking; the loop uses MSG_DONTWAIT instead (_Socket)
        self.data_ready = True  # gthread must not wait for data in the thread: the loop did
        self.source = RequestSource(sock)
        self.state = NEW
        self.expires = 0.0
        self.read_deadline = 0.0
        self.buf = bytearray()
        self.scanned = 0
        self.head: heads.Head | None = None
        self.drained = 0
        self.queue_key = None  # its lane in the thread pool (lanes.FairPool)
        self.held: _Held | None = None
        self.fd = sock.fileno()  # its key in the loop's poller, after its socket is closed too
        self.armed = False  # the poller will report it once it is readable (poller.Poller.arm)
        self.on_read = self.on_parked_read = None  # the loop's callbacks for it (ThreadWorker.accept)

    def init(self):
        if not self.initialized:  # the parser reads through the source, not the socket
            self.initialized = True
            # A plain request is read in one pass, any other by gunicorn's parser (plain.py).
            self.parser = plain.Parser(self.cfg, self.source, self.client)


class _Wakeups(gthread.PollableMethodQueue):
    """gthread's queue of callbacks for the loop, writing its wake-up byte only when the loop is not
    already due to run them: under load most of a round's callbacks then cost no system call."""

    def init(self):
        super().init()
        self._armed = False  # a byte is written and the loop has not yet read it

    def defer(self, callback, *args):
        self._queue.put(partial(callback, *args))
        if not self._armed:
            self._armed = True
            try:
                os.write(self._write_fd, b"\0")
            except OSError:  # the pipe is full: bytes are waiting, the loop will come
                pass

    def run_callbacks(self, _fileobj, max_callbacks=4096):
        try:
            os.read(self._read_fd, max_callbacks)
        except OSError:
            pass
        # Cleared before looking: a callback queued from now on writes a byte of its own.
        self._armed = False
        try:
            for _ in range(self._queue.qsize()):
                try:
                    callback = self._queue.get_nowait()
                except queue.Empty:
                    return
                callback()
        finally:
            if not self._armed and self._queue.qsize():  # a callback raised: the rest must not wait for a stranger's byte
                self._armed = True
                try:
                    os.write(self._write_fd, b"\0")
                except OSError:
                    pass


class _Sink:
    """Stands in for the client while gunicorn composes an error answer, which we then reword."""

    def __init__(self):
        self.data = b""

    def gettimeout(self):
        return 0.0

    def sendall(self, data):
        self.data += data


_HTML_MESSAGE = re.compile(rb"</h1>(.*)</body>", re.S)


class ThreadWorker(gthread.ThreadWorker):
    limits: Limits | None = None  # None: from the environment, when named by its dotted path

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg = settled.SettledConfig(self.cfg)  # each setting read once, not ~20 times a request
        if self.limits is None:
            from .. import settings

            self.limits = Limits.of(settings.load())
        cfg = self.cfg
        self.method_queue = _Wakeups()
        self.reads_ahead = (not cfg.is_ssl and getattr(cfg, "http2_cleartext", "off") == "off"
                            and getattr(cfg, "proxy_protocol", "off") == "off"
                            and getattr(cfg, "protocol", "http") == "http")
        self.waiting: dict[str, OrderedDict] = {state: OrderedDict() for state in (NEW, IDLE, READING, CLOSING)}
        if self.reads_ahead:
            # gthread's handle_request closes instead of keeping alive when these are too many.
            self.keepalived_conns = self.waiting[IDLE]
        self.buffered = 0
        self.live_pool: FairPool | None = None
        self._accept_paused_until = 0.0
        self.parked: set[Conn] = set()
        self._timers: list = []  # heap of (when, n, conn, park): parked polls' waits ending
        self._timer_numbers = itertools.count()

    def init_process(self):
        if self.reads_ahead:
            self.live_pool = FairPool(LIVE_THREADS, name="live", key_var=db.turn_key)
        else:
            self.log.warning("TLS, HTTP/2 or the PROXY protocol is configured: requests are read as gthread "
                             "does, without the read deadline or fair lanes")
        super().init_process()

    def get_thread_pool(self):
        return FairPool(self.cfg.threads, key_var=db.turn_key) if self.reads_ahead else super().get_thread_pool()

    def handle_quit(self, sig, frame):
        if self.live_pool is not None:
            self.live_pool.shutdown(wait=False)
        super().handle_quit(sig, frame)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self):
        if not self.reads_ahead:
            return super().run()
        self.poller.close()
        self.poller = Poller()  # connections one-shot: one epoll_ctl a request, not two (poller.py)
        self.poller.register(self.method_queue.fileno(), selectors.EVENT_READ, self.method_queue.run_callbacks)
        while self.alive:
            self.notify()
            self._accept_if_room()
            self.wait_for_and_dispatch_events(timeout=self._sleep())
            if not self.is_parent_alive():
                break
            self._expire()

        # Stopping: accept nothing more, give idle connections a short linger (a request that
        # arrives on one meanwhile is answered with "Connection: close"), finish what runs.
        self.set_accept_enabled(False)
        linger = time.monotonic() + gthread.STOP_KEEPALIVE_LINGER
        for state in (NEW, IDLE):
            for conn in self.waiting[state]:
                conn.expires = min(conn.expires, linger)
        graceful_until = time.monotonic() + self.cfg.graceful_timeout
        while self.nr_conns > 0 and time.monotonic() < graceful_until:
            self.notify()
            self.wait_for_and_dispatch_events(timeout=self._sleep())
            self._expire()

        for conns in (*self.waiting.values(), self.parked):
            for conn in list(conns):
                self._drop(conn)
        self.tpool.shutdown(wait=False)
        self.live_pool.shutdown(wait=False)
        self.poller.close()
        self.method_queue.close()
        for listener in self.sockets:
            listener.close()

    def wait_for_and_dispatch_events(self, timeout):
        """gthread's, except that a pile of ready sockets pauses the request threads until it is
        dealt with: with every thread busy, the loop won the GIL only now and then, so a request
        that arrived (`/live` too) waited over a second to be read
        (tests/controlplane/test_fair_sharing.py, 10,000 polls)."""
        try:
            events = self.poller.select(timeout)
        except InterruptedError:
            return
        pile = len(events) >= LOOP_FIRST_EVENTS
        if pile:
            self.tpool.pause()
        try:
            for key, _ in events:
                key.data(key.fileobj)
        finally:
            if pile:
                self.tpool.resume()

    def _accept_if_room(self):
        room = ((self.nr_conns < self.worker_connections or bool(self.waiting[NEW]))
                and time.monotonic() >= self._accept_paused_until)
        if room != self._accepting:
            self.set_accept_enabled(room)

    def _sleep(self) -> float:
        now = time.monotonic()
        nearest = min((next(iter(conns)).expires for conns in self.waiting.values() if conns), default=now + 1.0)
        if self._timers:
            nearest = min(nearest, self._timers[0][0])
        return max(0.0, min(1.0, nearest - now))

    def _expire(self):
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _when, _n, conn, park = heapq.heappop(timers)
            self._wake_parked(conn, park)
        for state, conns in self.waiting.items():
            while conns:
                conn = next(iter(conns))
                if conn.expires > now:
                    break
                if state == READING:
                    self._refuse(conn, 408, ReadDeadline(self.limits.read_seconds).description)
                else:
                    self._drop(conn)

    def accept(self, listener):
        if not self.reads_ahead:  # gthread's connections, served as gthread serves them
            return super().accept(listener)
        for _ in range(ACCEPT_BATCH):
            if self.nr_conns >= self.worker_connections and not self._evict_pending():
                return
            try:
                client, addr = _accept(listener)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment rather than spin or die.
                    self.log.warning("cannot accept a connection: %s (%d open); pausing accepts for 1 s",
                                     exc.strerror, self.nr_conns)
                    self._accept_paused_until = time.monotonic() + 1.0
                    return
                raise
            self.nr_conns += 1
            conn = Conn(self.cfg, client, addr, listener.getsockname())
            conn.on_read = partial(self._on_read, conn)
            conn.on_parked_read = partial(self._on_parked_read, conn)
            self._wait(conn, NEW, self.limits.pending_seconds)

    def _evict_pending(self) -> bool:
        """At the connection limit, close the oldest connection that never sent a byte, to make
        room: silent sockets cannot stop the worker from accepting, however long they may wait."""
        pending = self.waiting[NEW]
        if not pending:
            return False
        self._drop(next(iter(pending)))
        return True

    def _wait(self, conn: Conn, state: str, lifetime: float):
        """Put a connection in the loop, in a waiting state."""
        conn.state = state
        conn.expires = time.monotonic() + lifetime
        self.waiting[state][conn] = None
        self._arm(conn, conn.on_read)

    def _arm(self, conn: Conn, callback):
        if not conn.armed:
            self.poller.arm(conn, conn.fd, conn.sock, callback)
            conn.armed = True

    def _disarm(self, conn: Conn):
        if conn.armed:
            self.poller.disarm(conn, conn.fd)
            conn.armed = False

    def _unwait(self, conn: Conn):
        """Take a connection out of the loop (it becomes BUSY unless already out or closed)."""
        if conn.state not in self.waiting:
            return
        del self.waiting[conn.state][conn]
        conn.state = BUSY
        self._disarm(conn)

    def _on_read(self, conn: Conn, fileobj):
        """A waiting connection is readable; the poller holds it back until it is armed again."""
        conn.armed = False
        self._readable(conn, fileobj)
        if conn.state in self.waiting:  # still waiting for (more of) a request, or draining
            self._arm(conn, conn.on_read)

    def _release_buffer(self, conn: Conn) -> bytes:
        data = bytes(conn.buf)
        self.buffered -= len(data)
        conn.buf, conn.scanned, conn.head = bytearray(), 0, None
        return data

    def _drop(self, conn: Conn):
        """Close at once (expired, gone, or the worker stops)."""
        if conn.state == CLOSED:
            return
        if conn.state == PARKED:
            self._abandon(conn)
        self._unwait(conn)
        self._release_buffer(conn)
        conn.state = CLOSED
        self.nr_conns -= 1
        self.poller.forget(conn, conn.fd)
        conn.armed = False
        util.close(conn.sock)

    def _close_gracefully(self, conn: Conn):
        """Send FIN, then drain what the client still sends for a moment, in the loop: closing with
        unread input would make the kernel reset the connection and cut the last answer short."""
        self._unwait(conn)
        self._release_buffer(conn)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        conn.drained = 0
        self._wait(conn, CLOSING, CLOSE_LINGER)

    def _refuse(self, conn: Conn, status: int, message: str):
        rid = request_log.incoming_or_new(None)
        try:
            conn.sock.send(answers.error(status, message, rid), socket.MSG_DONTWAIT)  # a client that reads nothing gets less
        except OSError:
            pass
        self.log.debug("refused a request from %s with %d (request id %s): %s", conn.client, status, rid, message)
        self._close_gracefully(conn)

    def _readable(self, conn: Conn, _fileobj):
        if conn.state not in self.waiting:
            return  # closed earlier in this round of events
        if conn.state == CLOSING:
            self._drain(conn)
            return
        # Never more than the head limit, or than the rest of a body being buffered.
        if conn.head is None:
            room = HEAD_LIMIT + 1 - len(conn.buf)
        else:
            room = conn.head.size + (conn.head.body_length or 0) - len(conn.buf)
        try:
            data = conn.sock.recv(max(1, min(RECV_SIZE, room)), socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)  # the client went away before (or instead of) a request
            return
        if conn.state != READING:
            self._begin_request(conn)
        conn.buf += data
        self.buffered += len(data)
        if self.buffered > BUFFER_BUDGET:
            self._refuse(conn, 503, "the server holds too many unfinished requests right now; retry shortly")
            return
        self._advance(conn)

    def _drain(self, conn: Conn):
        try:
            data = conn.sock.recv(4096, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.drained += len(data)
        if not data or conn.drained > CLOSE_DRAIN_MAX:
            self._drop(conn)

    def _begin_request(self, conn: Conn):
        """The first byte of a request: its read deadline starts."""
        self.waiting[conn.state].pop(conn, None)
        conn.state = READING
        conn.read_deadline = conn.expires = time.monotonic() + self.limits.read_seconds
        self.waiting[READING][conn] = None

    def _advance(self, conn: Conn):
        """Run the request if it is complete (or if gunicorn's parser can refuse it already)."""
        if conn.head is None:
            size = heads.find_end(conn.buf, conn.scanned)
            if size < 0:
                conn.scanned = len(conn.buf)
                line_limit = self.cfg.limit_request_line
                if heads.malformed_so_far(conn.buf) or (
                        0 < line_limit < len(conn.buf) - 2 and conn.buf.find(b"\r\n") < 0):
                    self._dispatch(conn)  # the parser answers 400 or 414 from these bytes alone
                elif len(conn.buf) > HEAD_LIMIT:
                    self._refuse(conn, 431, f"the request head is larger than {HEAD_LIMIT} bytes")
                return
            conn.head = heads.parse(bytes(conn.buf[:size]))
        body = conn.head.body_length
        if body is None or body > BODY_LIMIT or len(conn.buf) >= conn.head.size + body:
            self._dispatch(conn)

    def _dispatch(self, conn: Conn):
        head = conn.head
        self._unwait(conn)
        conn.source.start(self._release_buffer(conn), conn.read_deadline, self.limits.read_seconds)
        if head is not None and head.is_live:
            pool, key = self.live_pool, "live"  # its own turn for a database connection too
        else:
            pool, key = self.tpool, head.queue if head is not None else None
        conn.queue_key = key
        self._submit(pool, key, self.handle, conn)

    def _submit(self, pool: FairPool, key, fn, conn: Conn):
        try:
            pool.submit(key, fn, conn, then=partial(self.method_queue.defer, self._finished, conn))
        except RuntimeError:  # the pool has shut down: the worker is exiting
            self._drop(conn)

    # -- parked long polls (api/parking.py) -------------------------------------------------------

    def _park(self, conn: Conn):
        """A long poll waits for its answer here, holding no thread, until its wait ends."""
        held = conn.held
        if conn.sock.fileno() < 0:
            self._abandon(conn)
            self._drop(conn)
            return
        conn.state = PARKED
        self.parked.add(conn)
        held.park += 1
        self._arm(conn, conn.on_parked_read)
        wait = held.poll.wait
        heapq.heappush(self._timers, (time.monotonic() + wait.timer_seconds(), next(self._timer_numbers),
                                      conn, held.park))
        # A wake-up comes from any thread (a result stored, a NOTIFY); the loop takes it from there.
        if wait.sub is not None and wait.sub.on_wake(partial(self.method_queue.defer, self._wake_parked,
                                                                 conn, held.park)):
            self._wake_parked(conn, held.park)

    def _unpark(self, conn: Conn):
        self.parked.discard(conn)
        conn.state = BUSY
        self._disarm(conn)

    def _wake_parked(self, conn: Conn, park: int):
        """Its wait is over (woken, or its time is up): step it in a thread. A late timer or wake-up
        (for an earlier park, or a connection gone since) does nothing."""
        if conn.state != PARKED or conn.held is None or conn.held.park != park:
            return
        self._unpark(conn)
        self._submit(self.tpool, conn.queue_key, self._resume, conn)

    def _on_parked_read(self, conn: Conn, _fileobj):
        """A parked poll's client sent something: EOF means it left, and its poll is given up. A
        pipelined next request stays unread (and the connection held back) until this answer is out."""
        conn.armed = False
        if conn.state != PARKED:
            return
        try:
            data = conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            self._arm(conn, conn.on_parked_read)
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)

    def _abandon(self, conn: Conn):
        """Give up a parked poll whose connection closes: its generator's `with` blocks give its
        places back."""
        held, conn.held = conn.held, None
        if conn.state == PARKED:
            self._unpark(conn)
        if held is None:
            return
        try:
            held.poll.close()
        except Exception:
            self.log.exception("a parked long poll failed while it was given up")
        held.poll.answered(CLIENT_CLOSED, 0)
        self._post_request(held.req, held.environ, held.resp)

    # -- in the threads, and back -----------------------------------------------------------------

    def handle(self, conn):
        if self.reads_ahead:
            conn.source.resume()
        return super().handle(conn)

    def _keepalive_after(self, conn, keepalive):
        if keepalive is PARKED:  # its answer comes later (_resume)
            return PARKED
        if conn.source.expired:  # what is left of that request is unknown: do not read on
            return False
        try:
            return super()._keepalive_after(conn, keepalive)
        except ReadDeadline:  # the drain of an unread body ran out of time
            return False

    def handle_request(self, req, conn):
        """gthread's, except that an answer that is a parked poll (api/parking.py) is not sent now:
        the connection goes back to the loop with it (PARKED)."""
        if not self.reads_ahead:
            return super().handle_request(req, conn)
        environ, resp, parked = {}, None, False
        try:
            self.cfg.pre_request(self, req)
            request_start = datetime.now()
            resp, environ = wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg)
            environ["wsgi.multithread"] = True
            environ[parking.ENVIRON_KEY] = self.worker_connections
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                resp.force_close()
            if not self.alive or not self.cfg.keepalive or len(self.keepalived_conns) >= self.max_keepalived:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            if isinstance(respiter, parking.ParkedPoll):
                conn.held = _Held(req, resp, environ, respiter, request_start)
                parked = True
                return PARKED
            return self._send(req, resp, environ, respiter, request_start)
        except OSError:
            raise
        except (Exception, SystemExit):
            if resp and resp.headers_sent:  # a 500 written now would corrupt the answer begun
                self.log.exception("Error handling request")
                util.close_graceful(conn.sock)
                raise StopIteration() from None
            raise
        finally:
            if not parked:
                self._post_request(req, environ, resp)

    def _send(self, req, resp, environ, respiter, started: datetime) -> bool:
        """Write the answer; whether the connection stays open (as gthread's handle_request)."""
        try:
            if isinstance(respiter, environ["wsgi.file_wrapper"]):
                resp.write_file(respiter)
            else:
                for item in respiter:
                    resp.write(item)
            resp.close()
        finally:
            self.log.access(resp, req, environ, datetime.now() - started)
            if hasattr(respiter, "close"):
                respiter.close()
        if resp.should_close():
            self.log.debug("Closing connection.")
            return False
        return True

    def _post_request(self, req, environ, resp):
        try:
            self.cfg.post_request(self, req, environ, resp)
        except Exception:
            self.log.exception("Exception in post_request hook")

    def _resume(self, conn):
        """In a pool thread: step a parked poll. PARKED when it waits again; else it is answered,
        and the result is handle()'s: whether the connection stays open."""
        held = conn.held
        try:
            answer = held.poll.step(held.poll.wait.outcome())
        except Exception:  # step answers the poll's own errors; this is a fault of ours
            self.log.exception("a parked long poll failed")
            self._abandon(conn)
            return False
        if answer is None:
            return PARKED
        conn.held = None
        try:
            conn.source.deadline = None  # its request was read long ago; the wait was serving
            resp = held.resp
            if answer.status != resp.status_code:
                resp.status, resp.status_code = answer.status_line, answer.status
            resp.headers.extend(answer.headers)
            resp.headers.append(("Content-Length", str(len(answer.body))))
            resp.response_length, resp.chunked = len(answer.body), False
            held.poll.answered(answer.status, len(answer.body))
            keep = self._send(held.req, resp, held.environ, [answer.body], held.started)
            return self._keepalive_after(conn, keep)
        except OSError as exc:
            self.log.debug("a parked long poll's answer could not be sent: %s", exc)
            return False
        finally:
            self._post_request(held.req, held.environ, held.resp)

    def _finished(self, conn: Conn, keep, error: BaseException | None):
        """In the loop, after handle() or _resume() ended in a thread with `keep` (or `error`)."""
        if error is not None:  # handle() and _resume() answer their own errors: this is a fault of ours
            self.log.error("a request failed outside its handlers; its connection is closed", exc_info=error)
            keep = False
        if keep is PARKED:
            if conn.state != CLOSED:
                self._park(conn)
            return
        keep = bool(keep) and conn.sock.fileno() >= 0
        if not keep:
            self._close_gracefully(conn)
            return
        # Bytes read past this request (the client pipelined the next one) come back to the loop.
        leftover = conn.parser.unreader.take_buffered() + conn.source.take_unread()
        conn.source.deadline = None
        lifetime = self.cfg.keepalive if self.alive else min(self.cfg.keepalive, gthread.STOP_KEEPALIVE_LINGER)
        self._wait(conn, IDLE, lifetime)
        if leftover:
            self._begin_request(conn)
            conn.buf += leftover
            self.buffered += len(leftover)
            self._advance(conn)

    def handle_error(self, req, client, addr, exc):
        if isinstance(exc, ReadDeadline):
            self.log.debug("request from %s not read in time", addr)
            status, message = 408, exc.description
        elif isinstance(exc, UnsupportedTransferCoding):
            # gunicorn answers 501, a server error; the fault is the client's header (a fuzzed
            # `Transfer-Encoding: +pKPIa` did it), and it is told what to send instead.
            status = 400
            message = (f"Transfer-Encoding {str(exc.hdr)[:60]!r} is not supported: send the body with "
                       "Content-Length, or with Transfer-Encoding: chunked")
        else:
            sink = _Sink()  # gunicorn classifies the error, logs it and writes the access log line
            super().handle_error(req, sink, addr, exc)
            status = answers.status_of(sink.data)
            found = _HTML_MESSAGE.search(sink.data)
            message = html.unescape(found.group(1).decode("latin-1")).strip() if found else ""
            if status >= 500 or not message:
                message = "the server could not handle this request; it has been logged"
        rid = request_log.incoming_or_new(None)
        self.log.debug("answered %d (request id %s): %s", status, rid, message)
        try:
            util.write_nonblock(client, answers.error(status, message, rid))
        except Exception:
            self.log.debug("failed to send an error answer")
