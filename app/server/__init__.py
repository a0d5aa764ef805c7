"""The HTTP server layer: a gunicorn worker that reads requests before it gives them a thread.

gunicorn's gthread worker hands a connection to a thread as soon as it is readable, and the thread
then blocks for as long as the client trickles its head or body: a few hundred slow or silent
clients hold every thread, and /live with them (audit H1). The worker here reads each request's
head, and a small body, in its event loop, with a deadline, and hands only complete requests to
threads, fairly per credential, with /live on a lane of its own (worker.py).

Nothing here imports Flask or the app: it sees bytes and sockets only.
"""
