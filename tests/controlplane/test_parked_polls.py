"""Long polls wait in the worker's event loop, not in threads (api/parking.py, server/worker.py).

Each test runs the real gunicorn control-plane with one worker of 8 threads on PostgreSQL, so
every figure past 8 is a poll that can only be waiting without a thread. Before parking, such a
process held at most 4 polls for their ttl (half its threads) and answered the rest at once.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import time

import httpx

from support.server import ControlPlane

THREADS = 8
POLLS = 300  # polls waiting at once: far past the threads


def _env(**extra: str) -> dict[str, str]:
    return {"WEB_CONCURRENCY": "1", "GUNICORN_THREADS": str(THREADS), "LONG_POLLS_PER_CLUSTER": "1000",
            "LONG_POLLS_PER_MACHINE": "4", "REQUEST_LOG": "all", "LOG_LEVEL": "info", **extra}


def _request(method: str, path: str, secret: str, machine: str | None, body: dict | None = None,
             close: bool = True, pad: str = "") -> bytes:
    payload = b"" if body is None else (json.dumps(body) + pad).encode()
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Basic {secret}"]
    if close:
        head.append("Connection: close")
    if machine:
        head.append(f"x-machine-id: {machine}")
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def _claim(secret: str, machine: str, ttl_ms: int, service: str = "parked", close: bool = True) -> bytes:
    return _request("POST", "/jobs-request", secret, machine,
                    {"service": service, "limit": 1, "ttl": ttl_ms, "functions": [{"name": "fn"}]}, close=close)


async def _exchange_with_head(port: int, request: bytes) -> tuple[int, bytes, bytes]:
    """One request on a connection of its own, read to EOF: (status, head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=60)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


async def _exchange(port: int, request: bytes) -> tuple[int, bytes, float]:
    """One request on a connection of its own, read to EOF: (status, body, seconds)."""
    started = time.monotonic()
    status, _head, body = await _exchange_with_head(port, request)
    return status, body, time.monotonic() - started


def _all(port: int, requests: list[bytes]) -> list[tuple[int, bytes, float]]:
    async def run():
        return await asyncio.gather(*(_exchange(port, r) for r in requests))
    return asyncio.run(run())


def _create(cp: ControlPlane, secret: str, n: int, service: str = "parked") -> list[str]:
    headers = {"Authorization": f"Basic {secret}"}
    with httpx.Client(base_url=cp.url, headers=headers, timeout=10) as client:
        return [client.post("/jobs", json={"service": service, "targetFn": "fn", "targetArgs": f"a{i}"}).json()["id"]
                for i in range(n)]


def test_polls_past_the_threads_wait_their_ttl_and_each_claims_one_job(fresh_pg_url):
    """300 claims (limit 1) from 75 machines over 30 services park in one 8-thread process; /live
    still answers at once; then 300 jobs come and every poll answers with one of them, none twice.
    (Ten polls a service: every job created wakes each poll of its service, as with threads.)"""
    with ControlPlane(fresh_pg_url, env=_env()) as cp:
        secret = cp.create_cluster()["apiSecret"]
        polls = [_claim(secret, f"m-{i % 75}", 20_000, service=f"s{i % 30}") for i in range(POLLS)]

        async def scenario():
            tasks = [asyncio.ensure_future(_exchange(cp.port, p)) for p in polls]
            await asyncio.sleep(3.0)
            early = [t for t in tasks if t.done()]
            started = time.monotonic()
            live = await asyncio.to_thread(httpx.get, f"{cp.url}/live", timeout=10)
            live_seconds = time.monotonic() - started
            ids = [job_id for k in range(30) for job_id in await asyncio.to_thread(_create, cp, secret, 10, f"s{k}")]
            answers = await asyncio.gather(*tasks)
            return early, live, live_seconds, ids, answers

        early, live, live_seconds, ids, answers = asyncio.run(scenario())

        assert early == [], f"{len(early)} of {POLLS} polls answered before any job existed"
        assert live.status_code == 200 and live_seconds < 2.0, (live.status_code, live_seconds)
        assert all(status == 200 for status, _, _ in answers), {status for status, _, _ in answers}
        claimed = [job["id"] for _, body, _ in answers for job in json.loads(body)]
        assert sorted(claimed) == sorted(ids), "every job claimed once, by one parked poll each"
        assert all(len(json.loads(body)) == 1 for _, body, _ in answers)


def test_a_parked_answer_is_framed_logged_and_keeps_its_connection(fresh_pg_url):
    """The answer of a poll that waited has a Content-Length, the request id and a JSON body; the
    connection serves the next request; the request log line has the whole wait as its duration."""
    with ControlPlane(fresh_pg_url, env=_env()) as cp:
        secret = cp.create_cluster()["apiSecret"]
        with socket.create_connection(("127.0.0.1", cp.port), timeout=10) as sock:
            sock.sendall(_claim(secret, "m-keep", 1_500, close=False))
            started = time.monotonic()
            head, body = _read_answer(sock)
            waited = time.monotonic() - started
            assert head.startswith(b"HTTP/1.1 200"), head
            assert re.search(rb"(?im)^content-type: application/json", head), head
            assert re.search(rb"(?im)^x-request-id: \S+", head), head
            assert not re.search(rb"(?im)^transfer-encoding", head), head
            assert json.loads(body) == [] and 1.4 < waited < 5, (body, waited)
            sock.sendall(_request("GET", "/live", secret, None, close=False))  # the same connection
            head, body = _read_answer(sock)
            assert head.startswith(b"HTTP/1.1 200"), head
        log = cp.log_tail(200_000)
        line = re.search(r"POST /jobs-request 200 ([0-9.]+)ms 3B", log)
        assert line and float(line.group(1)) >= 1400, log[-3000:]


def _read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: (\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return head, body


def test_a_poll_whose_client_left_claims_nothing_and_gives_its_place_back(fresh_pg_url):
    """Four polls of one machine (its whole budget) park, and their clients leave. A job created
    then goes to the machine's next poll, which waits its ttl: the gone polls hold no place."""
    env = _env(LONG_POLL_PAUSE_SECONDS="0.2")
    with ControlPlane(fresh_pg_url, env=env) as cp:
        secret = cp.create_cluster()["apiSecret"]
        gone = []
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", cp.port), timeout=10)
            sock.sendall(_claim(secret, "m-gone", 30_000))
            gone.append(sock)
        time.sleep(1.0)
        for sock in gone:
            sock.close()
        time.sleep(1.0)

        async def scenario():
            poll = asyncio.ensure_future(_exchange(cp.port, _claim(secret, "m-gone", 20_000)))
            await asyncio.sleep(1.5)
            waiting = not poll.done()  # within the budget: it waits (past it, it would answer in 0.2 s)
            ids = await asyncio.to_thread(_create, cp, secret, 1)
            return waiting, ids, await poll

        waiting, ids, (status, body, _) = asyncio.run(scenario())
        assert waiting, "the machine's next poll did not wait: the gone polls still held its places"
        assert status == 200 and [job["id"] for job in json.loads(body)] == ids
        gone_lines = re.findall(r"POST /jobs-request 499 ", cp.log_tail(200_000))
        assert len(gone_lines) == 4, "each gone poll's request log line"


def test_status_polls_park_and_answer_when_the_results_come(fresh_pg_url):
    """100 single-job status polls and 100 batch polls park; the results answer every one."""
    with ControlPlane(fresh_pg_url, env=_env()) as cp:
        secret = cp.create_cluster()["apiSecret"]
        ids = _create(cp, secret, 100, service="status")
        singles = [_request("GET", f"/jobs/{job_id}?ttl=20000", secret, f"caller-{i}") for i, job_id in enumerate(ids)]
        batches = [_request("POST", "/batch-jobs-status-request", secret, None, {"jobIds": [job_id], "ttl": 20_000})
                   for job_id in ids]

        async def scenario():
            tasks = [asyncio.ensure_future(_exchange(cp.port, r)) for r in singles + batches]
            await asyncio.sleep(2.0)
            early = sum(t.done() for t in tasks)
            await asyncio.to_thread(_answer_all, cp, secret, len(ids))
            return early, await asyncio.gather(*tasks)

        early, answers = asyncio.run(scenario())
        assert early == 0
        assert all(status == 200 for status, _, _ in answers)
        singles_done = [json.loads(body) for _, body, _ in answers[:100]]
        assert {row["id"] for row in singles_done} == set(ids) and all(row["status"] == "success" for row in singles_done)
        batch_done = [row for _, body, _ in answers[100:] for row in json.loads(body)]
        assert sorted(row["id"] for row in batch_done) == sorted(ids)


def _answer_all(cp: ControlPlane, secret: str, n: int, service: str = "status", wanted=lambda args: True) -> None:
    """Claim the service's jobs and answer the `n` whose targetArgs `wanted` accepts (the others
    stay claimed, unanswered)."""
    headers = {"Authorization": f"Basic {secret}", "x-machine-id": f"{service}-worker"}
    done = 0
    with httpx.Client(base_url=cp.url, headers=headers, timeout=30) as client:
        for _ in range(50):
            jobs = client.post("/jobs-request", json={"service": service, "limit": 100, "ttl": 1000}).json()
            for job in jobs:
                if wanted(job["targetArgs"]):
                    reply = client.post(f"/jobs/{job['id']}/result", json={"result": "oA==", "resultType": "resolution"})
                    assert reply.status_code == 204
                    done += 1
            if done >= n:
                return
    raise AssertionError(f"only {done} of {n} jobs answered")


def test_a_parked_big_poll_holds_its_body_bytes_until_it_is_answered_or_given_up(fresh_pg_url):
    """BODY_BUDGET_BYTES bounds big bodies read or held at once; a parked poll still holds its
    parsed body, so it keeps its bytes of the budget after its request thread is done with it."""
    pad = " " * (700 * 1024)  # JSON whitespace: a big body (64 KiB and up) of a small poll
    with ControlPlane(fresh_pg_url, env=_env(BODY_BUDGET_BYTES=str(1024 * 1024))) as cp:
        secret = cp.create_cluster()["apiSecret"]
        job_id = _create(cp, secret, 1, service="budget")[0]
        poll = _request("POST", "/batch-jobs-status-request", secret, None, {"jobIds": [job_id], "ttl": 6000}, pad=pad)

        def big_create() -> httpx.Response:
            body = json.dumps({"service": "budget", "targetFn": "fn", "targetArgs": "x"}) + pad
            return httpx.post(cp.url + "/jobs", content=body, timeout=30,
                              headers={"Authorization": f"Basic {secret}", "Content-Type": "application/json"})

        async def scenario():
            parked = asyncio.ensure_future(_exchange(cp.port, poll))
            await asyncio.sleep(0.5)
            during = await asyncio.to_thread(big_create)  # waits 2 s for bytes to come back, then is refused
            still_parked = not parked.done()
            return during, still_parked, await parked, await asyncio.to_thread(big_create)

        during, still_parked, (status, body, _), after = asyncio.run(scenario())
        assert still_parked, "the poll did not stay parked for its ttl"
        assert during.status_code == 503 and during.json()["error"]["code"] == "body_budget_spent", during.text
        assert status == 200 and [row["status"] for row in json.loads(body)] == ["pending"]  # its ttl ended
        assert after.status_code == 201, after.text

        with socket.create_connection(("127.0.0.1", cp.port), timeout=10) as sock:
            sock.sendall(poll)
            time.sleep(1.0)  # parked; then its client leaves
        time.sleep(0.5)
        assert big_create().status_code == 201, "a given-up poll kept its bytes of the budget"


def _execute(cluster_id: str, secret: str, tag: str, wait_seconds: float) -> bytes:
    payload = json.dumps({"service": "sync", "function": "fn", "args": [tag], "waitSeconds": wait_seconds}).encode()
    head = [f"POST /clusters/{cluster_id}/execute HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {secret}",
            "Connection: close", "Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def test_synchronous_calls_park_and_answer_their_result_or_202_with_where_to_ask(fresh_pg_url):
    """50 synchronous calls wait at once in a worker of 8 threads: the 25 whose jobs finish answer
    200 with their result; the 25 that outwait their waitSeconds answer 202 with a Location."""
    with ControlPlane(fresh_pg_url, env=_env()) as cp:
        cluster = cp.create_cluster()
        cluster_id, secret = cluster["id"], cluster["apiSecret"]
        answered = [_execute(cluster_id, secret, f"answered-{i}", 20) for i in range(25)]
        unanswered = [_execute(cluster_id, secret, f"unanswered-{i}", 4) for i in range(25)]

        async def scenario():
            tasks = [asyncio.ensure_future(_exchange_with_head(cp.port, r)) for r in answered + unanswered]
            await asyncio.sleep(2.0)
            early = sum(t.done() for t in tasks)
            await asyncio.to_thread(_answer_all, cp, secret, 25, "sync", lambda args: b"unanswered" not in base64.b64decode(args))
            return early, await asyncio.gather(*tasks)

        early, answers = asyncio.run(scenario())
        assert early == 0  # all 50 were waiting together, with 8 threads
        done = [json.loads(body) for status, _, body in answers[:25] if status == 200]
        assert len(done) == 25 and all(row["outcome"] == "resolution" for row in done)
        for status, head, body in answers[25:]:
            row = json.loads(body)
            assert status == 202 and row["state"] in ("pending", "running"), (status, body)
            location = re.search(rb"(?im)^location: (.+?)\r?$", head)
            assert location and location.group(1).decode() == f"/clusters/{cluster_id}/execute/{row['jobId']}"
