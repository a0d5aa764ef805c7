"""A worker's long poll may end a little before its ttl, at random, never after it (api/jobs.py
`_spread`): workers started together would otherwise all poll again in the same instant, every
ttl, for ever. A synchronous call's wait (access points) is not shortened."""
from __future__ import annotations

from app.api import jobs as jobs_api
from app.api.schemas import MAX_WAIT_MS


def test_a_wait_is_cut_by_at_most_a_twentieth_and_waits_past_the_longest_are_capped_first():
    for ttl in (20_000, 600_000):  # a ttl past the longest wait waits the longest, spread as well
        waits = [jobs_api._spread(ttl) for _ in range(2_000)]
        assert all(MAX_WAIT_MS * 0.95 <= w <= MAX_WAIT_MS for w in waits)
        assert max(waits) - min(waits) > MAX_WAIT_MS * 0.025  # spread over the range, not one instant
    assert {jobs_api._spread(0) for _ in range(100)} == {0}  # an immediate poll stays immediate
    assert all(950 <= jobs_api._spread(1_000) <= 1_000 for _ in range(1_000))


def test_each_poll_waits_its_own_share_of_its_ttl(api, monkeypatch):
    c = api.new_cluster()
    asked = []
    admit = jobs_api._POLLS.admit

    def recording(cluster_id, machine_id, wait_seconds, limits):
        asked.append(wait_seconds)
        return admit(cluster_id, machine_id, 0.0, limits)  # answer at once: the test needs the asked wait only

    monkeypatch.setattr(jobs_api._POLLS, "admit", recording)
    for n in range(40):
        api.claim(c, machine=f"m{n}", ttl=5_000)
    assert len(asked) == 40 and all(4.75 <= w <= 5.0 for w in asked)
    assert len(set(asked)) > 30  # forty workers polling together come back at forty moments
