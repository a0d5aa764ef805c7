"""gunicorn's response writer, with the head sent together with the first body bytes.

gunicorn writes a response's head and its body with two `sendall` calls: two system calls and,
with TCP_NODELAY, two packets the client wakes up for. Every job-protocol answer is a head and a
small JSON body (or none), so here the head waits for the body and both go in one write. The head
still goes first on its own when the body goes by sendfile or in chunks, and at close when there
is no body (a 204).
"""
from __future__ import annotations

from gunicorn import util
from gunicorn.http import wsgi


class CoalescedResponse(wsgi.Response):
    _held: bytes | None = None
    _coalesce = True

    def send_headers(self):
        if self.headers_sent:
            return
        if not self._coalesce or self.chunked:
            super().send_headers()
            return
        lines = self.default_headers()
        lines.extend(["%s: %s\r\n" % (k, v) for k, v in self.headers])
        self._held = util.to_bytestring("%s\r\n" % "".join(lines), "latin-1")
        self.headers_sent = True  # as far as gunicorn knows: what follows must not send it again

    def flush_head(self) -> None:
        held, self._held = self._held, None
        if held:
            util.write(self.sock, held)

    def _emit_body(self, data):
        held, self._held = self._held, None
        util.write(self.sock, held + data if held else data, self.chunked)

    def sendfile(self, respiter):
        self._coalesce = False  # the file goes by sendfile: its head first, as gunicorn writes it
        self.flush_head()
        return super().sendfile(respiter)

    def close(self):
        if not self.headers_sent:
            self.send_headers()
        self.flush_head()
        super().close()


def install() -> None:
    """Every response of this process (gunicorn's `wsgi.create` takes the class from its module)."""
    wsgi.Response = CoalescedResponse
