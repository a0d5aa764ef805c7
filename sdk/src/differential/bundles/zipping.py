"""The reproducible zip both bundle kinds end in, and Lambda's size limits.

Same files in, same bytes out: entries sorted by path, every timestamp 1980-01-01, modes 0644
(0755 when the source is executable), no directory entries, deflate at a fixed level. So a
rebuilt bundle has the same sha256, which `deploy status` shows and the control-plane records.
"""
from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

# Lambda: a function's code unzipped may not exceed 250 MB (the 50 MB zipped limit is for a zip
# sent directly to the Lambda API; ours goes through S3, bounded by the control-plane's maxBytes).
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
LAMBDA_DIRECT_ZIP_LIMIT = 50 * 1024 * 1024
_EPOCH = (1980, 1, 1, 0, 0, 0)

# Never packaged: version control, virtual environments, caches, earlier bundles.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "venv", "env", "__pycache__", ".mypy_cache",
                       ".pytest_cache", ".ruff_cache", ".tox", ".differential", ".idea", ".vscode"})
SKIP_SUFFIXES = (".pyc", ".pyo")
# Never packaged either: files that hold credentials (the function gets its settings from the stack).
SECRET_FILES = frozenset({".env", ".npmrc", ".pypirc", ".netrc"})


def is_secret_file(name: str) -> bool:
    return name in SECRET_FILES or name.startswith(".env.")


class BundleError(Exception):
    """The service cannot be packaged; the message says what to change."""


@dataclass(frozen=True)
class Bundle:
    path: Path            # the zip
    runtime: str          # python3.13, nodejs22.x, ...
    size: int             # bytes of the zip
    unzipped: int         # bytes of its files
    sha256: str
    files: int
    service_module: Optional[str] = None   # python: "pkg.mod:attr"
    entrypoint: Optional[str] = None       # node: the service module inside the bundle


def collect(root: Path, skip_dir: Callable[[Path], bool] = lambda p: False) -> Dict[str, Path]:
    """Archive name -> file for everything under `root`, minus SKIP_DIRS, compiled files, files
    with credentials (.env, .npmrc, ...) and what `skip_dir` rejects. Symlinked files are followed (their target's bytes are packaged);
    symlinked directories are not (they could loop or leave the tree)."""
    out: Dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not skip_dir(here / d)
                             and not (here / d).is_symlink())
        for name in filenames:
            if name.endswith(SKIP_SUFFIXES) or is_secret_file(name):
                continue
            path = here / name
            if path.is_file():
                out[path.relative_to(root).as_posix()] = path
    return out


def write_zip(files: Dict[str, Path], extra: Dict[str, bytes], dest: Path, *, runtime: str,
              service_module: Optional[str] = None, entrypoint: Optional[str] = None) -> Bundle:
    """Write `files` (archive name -> source) and `extra` (archive name -> bytes) to `dest`."""
    names = sorted(set(files) | set(extra))
    unzipped = sum(len(extra[n]) if n in extra else files[n].stat().st_size for n in names)
    if unzipped > LAMBDA_UNZIPPED_LIMIT:
        raise BundleError(f"the bundle would hold {unzipped / 2**20:.1f} MB unzipped; Lambda allows at most "
                          f"{LAMBDA_UNZIPPED_LIMIT // 2**20} MB: leave out large files or dependencies")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so the modes below count
            if name in extra:
                data, mode = extra[name], 0o644
            else:
                data = files[name].read_bytes()
                mode = 0o755 if files[name].stat().st_mode & stat.S_IXUSR else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    digest = hashlib.sha256()
    with dest.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return Bundle(path=dest, runtime=runtime, size=dest.stat().st_size, unzipped=unzipped,
                  sha256=digest.hexdigest(), files=len(names), service_module=service_module,
                  entrypoint=entrypoint)


def prefixed(files: Dict[str, Path], prefix: str) -> Dict[str, Path]:
    return {f"{prefix}/{name}": path for name, path in files.items()}
