"""The README's configuration table is generated from app/settings.py and must match it."""
from __future__ import annotations

import re
from pathlib import Path

from app import settings

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- config-table: start (scripts/config-table --write) -->", "<!-- config-table: end -->"
# Fields read only inside app/settings.py itself.
READ_BY_SETTINGS = {"require_database_url"}


def _readme_table() -> str:
    text = (ROOT / "README.md").read_text()
    assert START in text and END in text, f"README.md lacks the {START} ... {END} markers"
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def test_readme_table_is_the_generated_one():
    assert _readme_table() == settings.markdown_table(), (
        "README.md's configuration table differs from app/settings.py: run scripts/config-table --write")


def test_every_variable_is_in_the_table_with_its_help():
    table = settings.markdown_table()
    for var in settings.VARIABLES:
        [row] = [line for line in table.splitlines() if line.startswith(f"| `{var.name}` |")]
        assert var.help.replace("|", "&#124;") in row
        assert var.group in settings.GROUPS


def test_variables_the_app_does_not_read_say_they_are_reserved():
    sources = [p for p in (ROOT / "app").rglob("*.py") if p.name != "settings.py"] + [ROOT / "gunicorn.conf.py"]
    code = "\n".join(p.read_text() for p in sources)
    for var in settings.VARIABLES:
        read = var.field in READ_BY_SETTINGS or re.search(rf"\.{var.field}\b", code)
        if read:
            assert "reserved" not in var.help, f"{var.name} is read by the app; its help says it is not"
        else:
            assert "reserved" in var.help, f"nothing in app/ reads {var.name}: say so in its help"
