"""The thread of a write-behind buffer (the activity log, machines' heartbeats): it calls the
buffer's flush every interval once the first write started it, until stopped."""
from __future__ import annotations

import threading
from typing import Callable


class FlushThread:
    def __init__(self, name: str, flush: Callable[[], object], interval: Callable[[], float]) -> None:
        self._name, self._flush, self._interval = name, flush, interval
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def ensure(self) -> None:
        """Start it unless it runs (a forked child has none of its parent's threads: it starts its own)."""
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ends the thread after its current wait or flush (a later write starts it again)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval()):
            self._flush()
