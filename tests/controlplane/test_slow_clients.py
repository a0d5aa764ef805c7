"""Slow and silent clients cannot starve the server (issue 11 point 1, audit H1, L11).

Against a real gunicorn server (tests/support/server.py) with the worker of app/server/: hundreds of
clients trickling their head or body, and 10,000 silent sockets, must not delay /live or an
authenticated create past a second; a request has a read deadline that a long poll's wait is not
cut by; a poll whose client has gone claims nothing; gunicorn's own errors are JSON. The pieces
(the fair pool, the head reader, the deadline source, the descriptor limit) are tested alone below.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import resource
import select
import socket
import threading
import time

import httpx
import pytest

from app.server import fds, head as heads
from app.server.lanes import FairPool
from app.server.source import ReadDeadline, RequestSource
from support.server import ControlPlane

LIMIT = 1.0  # seconds: the bound for /live and an authenticated call under attack
CALL = {"service": "svc", "targetFn": "fn", "targetArgs": "kA=="}


@pytest.fixture(scope="module")
def server():
    """Production defaults (24 threads, 15 s read deadline) on the embedded SQLite, in one worker
    (as the audit ran it): 300 slow clients are more than its threads."""
    with ControlPlane(env={"WEB_CONCURRENCY": "1"}) as cp:
        yield cp, cp.create_cluster()


@pytest.fixture(scope="module")
def short_server():
    """Short deadlines, so that they can be watched passing."""
    with ControlPlane(env={"REQUEST_READ_SECONDS": "2", "PENDING_CONNECTION_SECONDS": "1.5"}) as cp:
        yield cp, cp.create_cluster()


def _auth(cluster, machine=None) -> dict:
    headers = {"Authorization": f"Basic {cluster['apiSecret']}"}
    if machine:
        headers["x-machine-id"] = machine
    return headers


def _timed(send) -> float:
    """Seconds one request took on a new connection, or infinity if it timed out."""
    started = time.monotonic()
    try:
        send()
    except httpx.TimeoutException:
        return float("inf")
    return time.monotonic() - started


def _worst_probes(cp, cluster, seconds: float) -> tuple[float, float]:
    """Probe GET /live and an authenticated POST /jobs every 0.5 s for `seconds`; the slowest of each."""
    def live():
        assert httpx.get(cp.url + "/live", timeout=5.0).status_code == 200

    def create():
        r = httpx.post(cp.url + "/jobs", json=CALL, headers=_auth(cluster), timeout=5.0)
        assert r.status_code == 201, r.text

    worst_live = worst_create = 0.0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        worst_live = max(worst_live, _timed(live))
        worst_create = max(worst_create, _timed(create))
        time.sleep(0.5)
    return worst_live, worst_create


@contextlib.contextmanager
def _trickling(port: int, count: int, first: bytes, then: bytes, every: float = 2.0):
    """`count` connections that send `first`, then `then` every `every` seconds (one thread)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    for sock in socks:
        sock.sendall(first)
        sock.setblocking(False)
    stop = threading.Event()

    def trickle():
        while not stop.wait(every):
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(then)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield socks
    finally:
        stop.set()
        thread.join()
        for sock in socks:
            sock.close()


@contextlib.contextmanager
def _more_descriptors(needed: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} file descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _read_answer(sock: socket.socket, timeout: float) -> tuple[int, dict, bytes]:
    """One HTTP answer from a raw socket: status, headers (lower-case names), body."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:]))
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def _trickle_until_answered(sock: socket.socket, piece: bytes, every: float) -> tuple[int, dict]:
    """Send `piece` every `every` seconds until an answer starts (at most 10 s); its status and JSON."""
    until = time.monotonic() + 10
    while time.monotonic() < until:
        if select.select([sock], [], [], every)[0]:
            status, _, body = _read_answer(sock, 5)
            return status, json.loads(body)
        with contextlib.suppress(OSError):
            sock.send(piece)
    raise AssertionError("no answer within 10 s")


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (TimeoutError, BlockingIOError):
        return False


# -- under attack: /live and a tenant's call stay fast ------------------------------------------

def test_slow_headers_from_300_clients_do_not_delay_live_or_a_call(server):
    cp, cluster = server
    with _trickling(cp.port, 300, b"POST /jobs HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n"):
        worst_live, worst_create = _worst_probes(cp, cluster, 8.0)
    print(f"worst: live {worst_live:.3f}s create {worst_create:.3f}s")
    assert worst_live < LIMIT and worst_create < LIMIT, (worst_live, worst_create)


def test_slow_bodies_from_300_clients_do_not_delay_live_or_a_call(server):
    cp, cluster = server
    head = b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    with _trickling(cp.port, 300, head, b" "):
        worst_live, worst_create = _worst_probes(cp, cluster, 8.0)
    print(f"worst: live {worst_live:.3f}s create {worst_create:.3f}s")
    assert worst_live < LIMIT and worst_create < LIMIT, (worst_live, worst_create)


def test_ten_thousand_silent_sockets_do_not_delay_live_or_a_call(server):
    cp, cluster = server
    with _more_descriptors(10_000 + 500):
        socks = []
        try:
            for _ in range(10_000):
                socks.append(socket.create_connection(("127.0.0.1", cp.port), timeout=5))
            worst_live, worst_create = _worst_probes(cp, cluster, 8.0)
            # They were all held open meanwhile (their own lifetime is 30 s), not refused.
            assert not any(_closed_by_server(sock, 0.0) for sock in socks[:: 500])
        finally:
            for sock in socks:
                sock.close()
    print(f"worst: live {worst_live:.3f}s create {worst_create:.3f}s")
    assert worst_live < LIMIT and worst_create < LIMIT, (worst_live, worst_create)


# -- deadlines and lifetimes -----------------------------------------------------------------------

def test_a_trickled_head_is_answered_408_in_json_at_the_read_deadline(short_server):
    cp, _ = short_server
    with socket.create_connection(("127.0.0.1", cp.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n")
        status, body = _trickle_until_answered(sock, b"X-Slow: 1\r\n", 0.4)
        elapsed = time.monotonic() - started
        assert status == 408 and body["error"]["code"] == "request_timeout", body
        assert 1.5 < elapsed < 4.5, elapsed
        assert _closed_by_server(sock, 3.0)


def test_a_trickled_big_body_is_answered_408_and_closed(short_server):
    cp, cluster = short_server
    # Larger than what the loop buffers (64 KiB): this body is read by the app, in a thread.
    head = (f"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {cluster['apiSecret']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 200000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", cp.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(head + b" " * 1000)
        status, body = _trickle_until_answered(sock, b" ", 0.3)
        elapsed = time.monotonic() - started
        assert status == 408 and body["error"]["code"] == "request_timeout", body  # the app's answer
        assert elapsed < 5.0, elapsed
        assert _closed_by_server(sock, 3.0)


def test_a_long_poll_outlasts_the_read_deadline(short_server):
    cp, cluster = short_server
    body = {"service": "idle-svc", "limit": 1, "ttl": 5000, "functions": [{"name": "fn"}]}
    started = time.monotonic()
    r = httpx.post(cp.url + "/jobs-request", json=body, headers=_auth(cluster, "m-long"), timeout=15)
    assert r.status_code == 200 and r.json() == []
    assert time.monotonic() - started >= 4.5  # held for its ttl, well past the 2 s read deadline


def test_a_body_sent_in_pieces_within_the_deadline_is_served(short_server):
    cp, cluster = short_server
    payload = json.dumps(CALL).encode()
    head = (f"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {cluster['apiSecret']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", cp.port), timeout=5) as sock:
        for piece in (head[:10], head[10:], payload[:5], payload[5:]):
            sock.sendall(piece)
            time.sleep(0.2)
        status, _, body = _read_answer(sock, 5)
    assert status == 201 and json.loads(body)["id"]


def test_a_silent_connection_is_closed_after_its_own_lifetime_and_a_kept_alive_one_is_not(short_server):
    cp, _ = short_server
    with socket.create_connection(("127.0.0.1", cp.port), timeout=5) as silent, \
            socket.create_connection(("127.0.0.1", cp.port), timeout=5) as kept:
        kept.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_answer(kept, 5)[0] == 200
        assert _closed_by_server(silent, 4.0)  # PENDING_CONNECTION_SECONDS=1.5
        time.sleep(0.5)
        kept.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")  # idle longer than that: still open
        assert _read_answer(kept, 5)[0] == 200


def test_at_its_connection_limit_the_worker_closes_the_oldest_silent_connections_to_accept_more():
    # The lifetime of a silent connection is long (a busy SDK may write late), so what keeps
    # silent sockets from filling the worker is eviction: oldest never-used connection first.
    with ControlPlane(env={"WEB_CONCURRENCY": "1", "GUNICORN_CMD_ARGS": "--worker-connections 60"}) as cp:
        cluster = cp.create_cluster()
        silent = [socket.create_connection(("127.0.0.1", cp.port), timeout=5) for _ in range(100)]
        try:
            worst_live, worst_create = _worst_probes(cp, cluster, 2.0)
            assert worst_live < LIMIT and worst_create < LIMIT, (worst_live, worst_create)
            assert _closed_by_server(silent[0], 2.0), "the oldest silent connection makes room"
            assert not _closed_by_server(silent[-1], 0.5), "the newest one waits its lifetime"
        finally:
            for sock in silent:
                sock.close()


def test_pipelined_requests_are_answered_in_order(short_server):
    cp, cluster = short_server
    payload = json.dumps(CALL).encode()
    create = (f"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {cluster['apiSecret']}\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload
    with socket.create_connection(("127.0.0.1", cp.port), timeout=5) as sock:
        sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n" + create + b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [_read_answer(sock, 5)[0] for _ in range(3)] == [200, 201, 404]


def test_a_poll_whose_client_has_gone_claims_nothing(short_server):
    cp, cluster = short_server
    body = json.dumps({"service": "gone-svc", "limit": 1, "ttl": 20000, "functions": [{"name": "fn"}]}).encode()
    head = (f"POST /jobs-request HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {cluster['apiSecret']}\r\n"
            f"x-machine-id: m-gone\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", cp.port), timeout=5) as sock:
        sock.sendall(head + body)
        time.sleep(1.0)  # the poll is parked in the view
    job = httpx.post(cp.url + "/jobs", json={**CALL, "service": "gone-svc"}, headers=_auth(cluster), timeout=5)
    assert job.status_code == 201
    time.sleep(1.5)  # the orphaned poll wakes on the new job (or on SQLite's short poll) and must see EOF
    claim = {"service": "gone-svc", "limit": 1, "ttl": 0, "functions": [{"name": "fn"}]}
    r = httpx.post(cp.url + "/jobs-request", json=claim, headers=_auth(cluster, "m-alive"), timeout=5)
    assert [j["id"] for j in r.json()] == [job.json()["id"]]


def test_a_tenant_with_a_thousand_queued_requests_does_not_push_another_tenants_call_back():
    # One request thread, so that requests queue: tenant A's thousand creates are all waiting when
    # B's arrives, and B's waits for at most one of them, not for all (gthread's FIFO).
    with ControlPlane(env={"WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "1"}) as cp:
        tenant_a, tenant_b = cp.create_cluster(), cp.create_cluster()
        payload = json.dumps(CALL).encode()
        flood = (f"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {tenant_a['apiSecret']}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload
        with _more_descriptors(1000 + 500):
            socks = [socket.create_connection(("127.0.0.1", cp.port), timeout=10) for _ in range(1000)]
            try:
                for sock in socks:
                    sock.sendall(flood)
                took = _timed(lambda: httpx.post(cp.url + "/jobs", json=CALL, headers=_auth(tenant_b), timeout=10))
                assert [_read_answer(sock, 30)[0] for sock in socks] == [201] * 1000  # A was served too
            finally:
                for sock in socks:
                    sock.close()
    print(f"B's create took {took:.3f}s behind A's 1000")
    assert took < LIMIT, took


@pytest.mark.parametrize("request_bytes,status,code", [
    (b"GET /live HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400, "bad_request"),
    (b"GET /live\nHost: x\r\n\r\n", 400, "bad_request"),  # a bare LF, refused without waiting for more
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET /live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, "header_fields_too_large"),
    (b"GET /live HTTP/1.1\r\n" + b"X-Many: a\r\n" * 4000 + b"\r\n", 431, "header_fields_too_large"),
])
def test_the_servers_own_errors_are_json(short_server, request_bytes, status, code):
    cp, _ = short_server
    with socket.create_connection(("127.0.0.1", cp.port), timeout=5) as sock:
        sock.sendall(request_bytes)
        got, headers, body = _read_answer(sock, 5)
    assert (got, headers["content-type"]) == (status, "application/json")
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"], error


# -- the parts -------------------------------------------------------------------------------------

def _ask(pool: FairPool, key, fn, *args) -> concurrent.futures.Future:
    """One request to the pool, as a Future (set by the request's `then`)."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def then(result, error):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    pool.submit(key, fn, *args, then=then)
    return future


def test_the_pool_serves_queues_in_turn():
    pool = FairPool(1)
    order: list[str] = []
    gate, holding = threading.Event(), threading.Event()

    def hold():
        holding.set()
        gate.wait()

    _ask(pool, "a", hold)  # holds the only thread while the queues fill
    assert holding.wait(5)
    for i in range(10_000):
        _ask(pool, "a", order.append, f"a{i}")
    done = _ask(pool, "b", order.append, "b")
    for i in range(3):
        _ask(pool, None, order.append, f"anon{i}")
    gate.set()
    done.result(timeout=10)
    pool.shutdown(wait=True)
    assert order.index("b") <= 1 and order.index("anon0") <= 2  # one turn of "a" at most before each
    assert len(order) == 10_004 and order[:3] == ["a0", "b", "anon0"]


def test_a_paused_pool_starts_nothing_new_until_resumed_or_the_longest_pause(monkeypatch):
    """The event loop pauses the pool while it works through a pile of ready sockets: the request
    running goes on, the next one waits for the resume, and never longer than the longest pause."""
    from app.server import lanes
    pool = FairPool(1)
    gate, holding = threading.Event(), threading.Event()

    def hold():
        holding.set()
        gate.wait()

    _ask(pool, "a", hold)
    assert holding.wait(5)
    monkeypatch.setattr(lanes, "PAUSE_MAX_SECONDS", 30.0)
    pool.pause()
    waiting = _ask(pool, "a", lambda: "ran")
    gate.set()  # the running request ends; the next must wait while the pool is paused
    with pytest.raises(concurrent.futures.TimeoutError):
        waiting.result(timeout=0.5)
    pool.resume()
    assert waiting.result(timeout=5) == "ran"
    monkeypatch.setattr(lanes, "PAUSE_MAX_SECONDS", 0.2)
    pool.pause()  # never resumed: the thread goes ahead after the longest pause
    assert _ask(pool, "a", lambda: "anyway").result(timeout=5) == "anyway"
    pool.shutdown(wait=True)


def test_the_pool_grows_to_its_size_and_carries_errors():
    pool = FairPool(3)
    gate = threading.Event()
    started = threading.Semaphore(0)

    def hold():
        started.release()
        gate.wait()

    futures = [_ask(pool, "k", hold) for _ in range(3)]
    assert all(started.acquire(timeout=5) for _ in range(3))  # three threads at once, one queue
    gate.set()
    [f.result(timeout=5) for f in futures]
    with pytest.raises(ZeroDivisionError):
        _ask(pool, "k", lambda: 1 / 0).result(timeout=5)
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        pool.submit("k", print)


def test_the_loops_wakeups_run_every_callback_once_with_few_bytes_written():
    """Callbacks deferred from many threads while the loop drains them: each runs exactly once, in
    the loop's thread, and a byte is written only when the loop is not already due (not one a call)."""
    import os
    import selectors

    from app.server.worker import _Wakeups

    wakeups = _Wakeups()
    wakeups.init()
    writes = []
    real_write = os.write

    def counting_write(fd, data):
        writes.append(len(data))
        return real_write(fd, data)

    ran: list[int] = []
    loop_thread = threading.get_ident()
    threads_n, each = 8, 2000

    def defer_many(base):
        for i in range(each):
            wakeups.defer(lambda n=base + i: ran.append(n) if threading.get_ident() == loop_thread else None)

    with selectors.DefaultSelector() as sel:
        sel.register(wakeups.fileno(), selectors.EVENT_READ)
        try:
            os.write = counting_write  # the module calls os.write: count what it writes
            threads = [threading.Thread(target=defer_many, args=(t * each,)) for t in range(threads_n)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 20
            while len(ran) < threads_n * each and time.monotonic() < deadline:
                if sel.select(timeout=0.5):
                    wakeups.run_callbacks(None)
            for t in threads:
                t.join()
        finally:
            os.write = real_write
            wakeups.close()
    assert sorted(ran) == list(range(threads_n * each))  # every one, once, in the loop's thread
    assert 0 < len(writes) < threads_n * each


def test_the_head_reader():
    raw = (b"POST /jobs?x=1 HTTP/1.1\r\nHost: x\r\nauthorization: Basic s3cret\r\nContent-Length: 12\r\n\r\n")
    assert heads.find_end(raw + b"{}", 0) == len(raw)
    assert heads.find_end(raw[:-1], 0) == -1 and heads.find_end(raw, len(raw) - 2) == len(raw)
    head = heads.parse(raw)
    assert (head.method, head.path, head.body_length, head.size) == (b"POST", b"/jobs", 12, len(raw))
    # the scheme word does not matter, the token does; the key is not the secret
    assert head.queue == heads.parse(raw.replace(b"Basic", b"Bearer")).queue != heads.parse(
        raw.replace(b"s3cret", b"other")).queue
    assert b"s3cret" not in head.queue
    assert heads.parse(b"GET /live HTTP/1.1\r\n\r\n").is_live and heads.parse(b"GET /live HTTP/1.1\r\n\r\n").queue is None
    assert not heads.parse(b"POST /live HTTP/1.1\r\n\r\n").is_live
    for framing in (b"Transfer-Encoding: chunked", b"Expect: 100-continue", b"Content-Length: -1",
                    b"Content-Length: 1\r\nContent-Length: 1", b"Content-Length: " + b"9" * 30):
        assert heads.parse(b"POST /jobs HTTP/1.1\r\n" + framing + b"\r\n\r\n").body_length is None, framing
    assert heads.malformed_so_far(b"GET / HTTP/1.1\nHost") and not heads.malformed_so_far(b"GET / HTTP/1.1\r\nHo")


@pytest.fixture
def source_pair():
    """A RequestSource over one end of a socket pair, on a clock the test sets: (source, far end, clock)."""
    near, far = socket.socketpair()
    now = [100.0]
    try:
        yield RequestSource(near, clock=lambda: now[0]), far, now
    finally:
        near.close()
        far.close()


def test_the_source_replays_then_reads_until_its_deadline(source_pair):
    source, far, now = source_pair
    near = source.sock
    source.start(b"buffered", deadline=100.5, seconds=0.5)
    far.sendall(b"socket")
    assert source.recv(3) + source.recv(100) + source.recv(100) == b"buffered" + b"socket"
    now[0] = 100.6
    with pytest.raises(ReadDeadline) as caught:
        source.recv(100)
    assert caught.value.code == 408 and source.expired
    source.start(b"", deadline=time.monotonic() + 0.3, seconds=0.3)  # a real wait that runs out
    source._clock = time.monotonic
    with pytest.raises(ReadDeadline):
        source.recv(100)
    assert near.gettimeout() is None  # the socket's own timeout is put back
    source.start(b"next", deadline=None, seconds=0.3)
    assert source.recv(100) == b"next" and source.take_unread() == b""


def test_time_in_the_servers_own_queue_does_not_count_against_the_client(source_pair):
    # A big body waits in the pool's queue after its head was read; the client is not slow for it.
    source, far, now = source_pair
    source.start(b"head", deadline=100.5, seconds=0.5)
    now[0] = 130.0  # thirty seconds in the queue behind other requests
    source.resume()
    assert source.recv(100) == b"head"
    far.sendall(b"body")
    assert source.recv(100) == b"body"
    now[0] = 130.6  # past the moved deadline: the client's own slowness is still cut
    with pytest.raises(ReadDeadline):
        source.recv(100)


def test_a_timeout_set_on_the_source_bounds_its_socket_reads_and_leaves_the_socket_blocking(source_pair):
    # gunicorn's body drain sets a timeout through the source after every request; it must bound
    # the drain's reads, and cost the socket nothing when nothing is read from it.
    source, far, _now = source_pair
    near = source.sock
    source.start(b"", deadline=None, seconds=0.3)
    source.settimeout(0.2)
    assert source.gettimeout() == 0.2 and near.gettimeout() is None
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        source.recv(100)  # nothing sent: the drain's own timeout ends the read
    assert 0.15 < time.monotonic() - started < 2 and near.gettimeout() is None
    far.sendall(b"rest")
    assert source.recv(100) == b"rest"
    source.settimeout(None)
    assert source.gettimeout() is None and near.gettimeout() is None


def test_a_connections_socket_stays_blocking_and_the_loop_reads_it_without_waiting():
    from app.server import worker as worker_module

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    client = socket.create_connection(listener.getsockname())
    try:
        for _ in range(100):
            try:
                conn, _addr = worker_module._accept(listener)
                break
            except BlockingIOError:
                time.sleep(0.01)
        with conn:
            assert isinstance(conn, worker_module._Socket) and conn.gettimeout() is None
            conn.setblocking(True)  # gthread's per-request call: already so, nothing changes
            assert conn.gettimeout() is None
            with pytest.raises(BlockingIOError):  # the loop's read of an idle client does not block
                conn.recv(10, socket.MSG_DONTWAIT)
            client.sendall(b"GET")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    assert conn.recv(10, socket.MSG_DONTWAIT) == b"GET"
                    break
                except BlockingIOError:
                    time.sleep(0.01)
            else:
                pytest.fail("the bytes sent never arrived")
            conn.setblocking(False)
            assert conn.gettimeout() == 0.0
    finally:
        client.close()
        listener.close()


def test_descriptors_are_raised_to_the_hard_limit_and_connections_fit_in_them():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        assert fds.raise_soft_limit() == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert fds.worker_connections(20000, 1 << 20) == 20000
    assert fds.worker_connections(20000, 4096) == 4096 - fds.RESERVED
