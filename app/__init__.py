"""The Differential control-plane: `create_app()` builds the Flask application."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from flask import Flask

from . import db, migrations, sealing, settings as settings_module
from .cloud import assets as asset_store
from .cloud.sns import Verifier
from .engine import cluster_deletion, clusters, machines, statements
from .engine.maintenance import Maintainer
from .engine.signals import hub
from .observability import logging_setup, request_log
from .observability.events import events
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: Settings
    maintainer: Maintainer | None
    stopping: threading.Event = field(default_factory=threading.Event)
    sns_verifier: Verifier = field(default_factory=Verifier)
    assets: asset_store.AssetStore | None = None  # where bundles and packages live (cloud/assets.py)

    def begin_shutdown(self) -> None:
        """Long polls answer now with what they have (a SIGTERM handler calls this first)."""
        self.stopping.set()
        hub.wake_all()

    def shutdown(self) -> None:
        """A graceful stop: long polls return now, maintenance lets go of its lease, heartbeats and events are written."""
        self.begin_shutdown()
        if self.maintainer:
            self.maintainer.stop()
        machines.writer.close()
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
    logging_setup.configure(settings)  # text or JSON lines, request ids, no secrets
    database = db.bind(settings, statements.DIALECTS)
    keys = _secrets_keys(settings)
    clusters.configure_sealing(sealing.Box(keys))
    migrations.migrate(database)
    _seal_stored_secrets()
    hub.configure(_listen_params(database) if settings.uses_postgres else None)
    events.configure(max_rows=settings.event_buffer_rows, cluster_rows=settings.event_buffer_cluster_rows)
    machines.writer.configure(machine_timeout_seconds=settings.machine_timeout_seconds)

    maintainer = None
    if settings.sweeper_enabled:
        maintainer = Maintainer.for_settings(interval=settings.sweep_interval_seconds,
                                             machine_timeout=settings.machine_timeout_seconds,
                                             retention_days=settings.retention_days,
                                             metrics_retention_days=settings.metrics_retention_days,
                                             deployments=settings)
        maintainer.start()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["differential"] = AppState(settings, maintainer,
                                              assets=asset_store.for_settings(settings, asset_store.signing_key(keys[0])))
    cluster_deletion.configure(app.extensions["differential"].assets, settings)  # its stacks and objects go too

    from . import api, console
    from .api import hot_path

    api.register(app)
    console.register(app)
    request_log.install(app, settings.request_log)
    hot_path.install(app)  # create and result, before Flask's routing (api/hot_path.py)
    return app


def _secrets_keys(settings: Settings) -> tuple[str, ...]:
    if settings.secrets_key:
        return settings.secrets_key
    db.make_private(settings.data_dir, folder=True)
    keys, path = sealing.key_file_keys(settings.data_dir)
    if settings.uses_postgres:
        log.warning("SECRETS_KEY is unset: cluster secrets are sealed with the key in %s; every process that "
                    "shares this database needs the same key, so set SECRETS_KEY", path)
    return keys


def _seal_stored_secrets() -> None:
    counts = clusters.seal_stored_secrets()
    if counts["sealed"]:
        db.unit_of_work(db.dialect.scrub, transaction=False)  # the clear secrets' old bytes, from the file too
    if any(counts.values()):
        log.info("sealed %(sealed)d cluster secrets kept in clear and %(resealed)d sealed by an older key", counts)


def _listen_params(database) -> dict:
    params = dict(database.connect_params)
    params.pop("options", None)  # the LISTEN connection idles by design: no statement timeouts on it
    return {"dbname": database.database, **params}
