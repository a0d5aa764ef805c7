"""A reproducible npm tarball: what `npm pack` makes, without npm and without the clock.

Every entry is under `package/`, sorted, a regular file of mode 0644 owned by uid/gid 0 with no
user or group names, with npm's own fixed mtime (1985-10-26T08:15:00Z, as `npm pack` writes);
the gzip header's mtime is 0 and it names no file. The same files give the same bytes.
"""
from __future__ import annotations

import gzip
import io
import tarfile
from typing import Dict

NPM_FIXED_MTIME = 499162500  # 1985-10-26T08:15:00Z


def pack(files: Dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(files):
            data = files[path]
            info = tarfile.TarInfo(f"package/{path}")
            info.size = len(data)
            info.mtime = NPM_FIXED_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()
