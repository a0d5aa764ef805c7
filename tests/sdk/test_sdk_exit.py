"""A script that uses a client and never closes it exits at once, with nothing on stderr (asyncio
used to print "Task was destroyed but it is pending!" for the result poller's tasks)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from sdk_helpers import subprocess_env

pytestmark = pytest.mark.postgres

# Each script makes a real call, maybe leaves a wait in flight (a timed-out call's batch long
# poll is still open), and ends without closing its client (except `closed-mid-wait`).
HEAD = """
import asyncio, gc, os, time
from differential import AsyncDifferential, CallTimeoutError, Differential
LEAVE_A_WAIT = bool(os.environ.get("LEAVE_A_WAIT"))
"""
CALLS = """
d = Differential(os.environ["SECRET"], endpoint=os.environ["ENDPOINT"])
client = d.client(os.environ["SERVICE"])
print(client.with_options(timeout=30).echo(41), flush=True)
if LEAVE_A_WAIT:
    try:
        client.with_options(timeout=0.5).nap(10)
    except CallTimeoutError:
        print("timed out", flush=True)
"""
ASYNC_CALLS = """
d = AsyncDifferential(os.environ["SECRET"], endpoint=os.environ["ENDPOINT"])
client = d.client(os.environ["SERVICE"])
print(await client.with_options(timeout=30).echo(41), flush=True)
if LEAVE_A_WAIT:
    try:
        await client.with_options(timeout=0.5).nap(10)
    except CallTimeoutError:
        print("timed out", flush=True)
"""


def _body(code: str) -> str:
    return textwrap.indent(code, "    ")


SCRIPTS = {
    "module-level": HEAD + CALLS,
    # The instance is garbage once the function returns: its poller's tasks used to be collected
    # while pending.
    "dropped-in-a-function": HEAD + "def use_once():" + _body(CALLS) + "use_once()\ngc.collect()\ntime.sleep(0.2)\n",
    "closed-mid-wait": HEAD + CALLS + "d.close()\n",
    "asyncio": HEAD + "async def main():" + _body(ASYNC_CALLS) + "asyncio.run(main())\ngc.collect()\n",
}


@pytest.fixture
def serving(d, service_name):
    svc = d.service(service_name)

    @svc.function
    def echo(x: int) -> int:
        return x + 1

    @svc.function
    def nap(seconds: float) -> str:
        time.sleep(seconds)
        return "rested"

    svc.start()
    yield service_name
    svc.stop(timeout=15)


@pytest.mark.parametrize("script", list(SCRIPTS))
@pytest.mark.parametrize("leave_a_wait", [False, True], ids=["idle", "wait-in-flight"])
def test_an_unclosed_client_exits_quietly_and_promptly(sdk_control_plane, cluster, serving, script, leave_a_wait):
    env = subprocess_env(SECRET=cluster["apiSecret"], ENDPOINT=sdk_control_plane.url, SERVICE=serving)
    if leave_a_wait:
        env["LEAVE_A_WAIT"] = "1"
    code = SCRIPTS[script] + "\nprint(time.time(), flush=True)\n"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    exited = time.time()
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no "Task was destroyed but it is pending!", no traceback, no warning
    lines = r.stdout.splitlines()
    assert lines[0] == "42"
    if leave_a_wait:
        assert lines[1] == "timed out"
    assert exited - float(lines[-1]) < 3.0  # from the script's last line to the process's end
