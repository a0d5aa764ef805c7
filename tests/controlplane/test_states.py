"""The state machine has one home: states.py names it, statements.py makes its transitions, the
rest of the engine uses the names, and docs/state-machine.md draws the same machine."""
from __future__ import annotations

import ast
import pathlib
import re

from app.engine import statements, states
from app.engine.states import JobStatus

ROOT = pathlib.Path(__file__).resolve().parents[2]


def constants(cls) -> set[str]:
    return {v for k, v in vars(cls).items() if k.isupper()}


NAMES = set().union(*map(constants, (states.JobStatus, states.MachineStatus, states.EventType,
                                     states.ResultType))) | {"stalled"}
QUOTED_IN_SQL = re.compile(r"'(%s)'" % "|".join(sorted(NAMES)))


def test_every_transition_is_a_function_of_statements():
    for t in states.TRANSITIONS:
        assert callable(getattr(statements, t.name, None)), t.name
        assert t.source in (None, *states.ALL) and t.target in states.ALL
        assert t.events and set(t.events) <= constants(states.EventType)


def test_terminal_states_are_left_only_by_an_operators_rerun_and_every_state_is_reached():
    assert {t.name for t in states.TRANSITIONS if t.source in states.TERMINAL} <= {"rerun_jobs"}
    assert all(t.source in states.RERUNNABLE for t in states.TRANSITIONS if t.source in states.TERMINAL)
    assert {t.target for t in states.TRANSITIONS} == set(states.ALL)
    assert set(states.IN_FLIGHT) | set(states.TERMINAL) == set(states.ALL)
    assert "stalled" not in states.ALL  # nothing writes it
    assert states.allowed(JobStatus.RUNNING, JobStatus.PENDING)
    assert not states.allowed(JobStatus.SUCCESS, JobStatus.RUNNING)
    assert not states.allowed(JobStatus.PENDING, JobStatus.SUCCESS)


def _strings(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_no_status_or_event_literal_outside_states_py():
    files = [*(ROOT / "app" / "engine").glob("*.py"), *(ROOT / "app" / "observability").glob("*.py"),
             ROOT / "app" / "models.py"]
    found = [f"{path.relative_to(ROOT)}:{line}: {value!r}"
             for path in files if path.name != "states.py"
             for line, value in _strings(path)
             if value in NAMES or QUOTED_IN_SQL.search(value)]
    assert found == []


def test_the_doc_tables_every_transition_and_event():
    doc = (ROOT / "docs" / "state-machine.md").read_text()
    for t in states.TRANSITIONS:
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{t.name}` |")), None)
        assert row is not None, t.name
        assert f"`{t.target}`" in row and (t.source is None or f"`{t.source}`" in row)
        for event in t.events:
            assert f"`{event}`" in row, (t.name, event)
    for event in constants(states.EventType):
        assert f"`{event}`" in doc, event
