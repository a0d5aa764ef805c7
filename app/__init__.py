"""The Differential control-plane: `create_app()` builds the Flask application."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from flask import Flask

from . import db, migrations, settings as settings_module
from .cloud.sns import Verifier
from .engine.signals import hub
from .engine.sweeper import Sweeper
from .observability.events import events
from .settings import Settings


@dataclass
class AppState:
    settings: Settings
    sweeper: Sweeper | None
    stopping: threading.Event = field(default_factory=threading.Event)
    sns_verifier: Verifier = field(default_factory=Verifier)

    def shutdown(self) -> None:
        """Begin a graceful stop: long polls return now, the sweeper lets go, events are written."""
        self.stopping.set()
        hub.wake_all()
        if self.sweeper:
            self.sweeper.stop()
        events.close()

    def close(self) -> None:
        """Release everything (tests build many apps in one process)."""
        self.shutdown()
        hub.stop()
        database = db.database.obj
        if hasattr(database, "close_all"):
            database.close_all()
        elif not database.is_closed():
            database.close()


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or settings_module.load_or_exit()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    database = db.bind(settings)
    migrations.migrate(database)
    hub.configure(_listen_params(database) if settings.uses_postgres else None)

    sweeper = None
    if settings.sweeper_enabled:
        sweeper = Sweeper(interval=settings.sweep_interval_seconds, machine_timeout=settings.machine_timeout_seconds,
                          retention_days=settings.retention_days)
        sweeper.start()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["differential"] = AppState(settings, sweeper)

    from . import api

    api.register(app)
    return app


def _listen_params(database) -> dict:
    params = dict(database.connect_params)
    params.pop("options", None)  # the LISTEN connection idles by design: no statement timeouts on it
    return {"dbname": database.database, **params}
