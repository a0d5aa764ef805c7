"""A reproducible wheel (PEP 427) of one pure-Python module: the same inputs give the same bytes.

Entries are sorted (the dist-info's RECORD last, as installers expect), every timestamp is
1980-01-01 (the earliest a zip can say), modes are 0644, and RECORD lists each file's sha256
(urlsafe base64, no padding) and size. The file name and the distribution and module names come
from the control-plane's reservation: this module only lays them out.
"""
from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from typing import Dict, List, Optional

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
GENERATOR = "differential-client-publish"


def dist_info_name(file_name: str, version: str) -> str:
    """`<name>-<version>.dist-info`, with the name as the wheel's file name spells it."""
    return f"{file_name.split('-', 1)[0]}-{version}.dist-info"


def metadata(*, distribution: str, version: str, summary: str, requires: List[str],
             requires_python: str = ">=3.9", description: Optional[str] = None) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {distribution}", f"Version: {version}", f"Summary: {summary}",
             f"Requires-Python: {requires_python}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    if description:
        lines += ["Description-Content-Type: text/markdown", "", description]
    return "\n".join(lines) + "\n"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build(*, file_name: str, distribution: str, module: str, version: str, source: str, summary: str,
          requires: List[str], extra_files: Optional[Dict[str, bytes]] = None) -> bytes:
    """The wheel's bytes: `<module>/__init__.py` (the source), `<module>/py.typed`, and the dist-info."""
    info = dist_info_name(file_name, version)
    files: Dict[str, bytes] = {
        f"{module}/__init__.py": source.encode(),
        f"{module}/py.typed": b"",
        f"{info}/METADATA": metadata(distribution=distribution, version=version, summary=summary,
                                     requires=requires).encode(),
        f"{info}/WHEEL": (f"Wheel-Version: 1.0\nGenerator: {GENERATOR}\nRoot-Is-Purelib: true\n"
                          "Tag: py3-none-any\n").encode(),
    }
    for path, data in (extra_files or {}).items():
        files[f"{module}/{path}"] = data
    record_path = f"{info}/RECORD"
    record = "".join(f"{path},{_record_hash(files[path])},{len(files[path])}\n" for path in sorted(files))
    record += f"{record_path},,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(files) + [record_path]:
            data = record.encode() if path == record_path else files[path]
            entry = zipfile.ZipInfo(path, date_time=FIXED_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = (0o100644 & 0xFFFF) << 16
            entry.create_system = 3  # unix, so the mode above is read
            zf.writestr(entry, data)
    return buf.getvalue()
