"""AWS Lambda entry point for Python services: `differential.lambda_handler.handler`.

`differential deploy create SERVICE PATH` puts it in the service's bundle (this SDK is copied into
every Python bundle) and the control-plane's template names it as the function's handler. The
control-plane invokes the function asynchronously, with an empty payload, when the service has
waiting calls and no machine of the deployment polls (its maintenance leader, at most once per
DEPLOYMENT_WAKE_INTERVAL_SECONDS). Each invocation (any payload) starts the user's service, which
long-polls for jobs, and stops it after it runs idle (two consecutive empty polls, as the
TypeScript SDK does under DIFFERENTIAL_DEPLOYMENT_PROVIDER=lambda) or when the invocation is about
to time out; calls that come later wake it again.

Environment (the deployment's stack sets all but the optional ones):
  DIFFERENTIAL_ENDPOINT          the control-plane's URL (its PUBLIC_URL)
  DIFFERENTIAL_API_SECRET        the deployment's token (not the cluster's secret): it may claim and
                                 report the calls of this service only, while the deployment lives
  DIFFERENTIAL_DEPLOYMENT_ID     sent as x-deployment-id: the control-plane records it on the
                                 machine (`deploymentId` in GET /clusters/:id), which tells the leader
                                 that the deployment is alive and needs no wake-up
  DIFFERENTIAL_SERVICE_MODULE    `package.module:attribute`, the attribute being a Service (or a
                                 callable returning one); default attribute name: `service`
  DIFFERENTIAL_MAX_IDLE_CYCLES   optional, default 2
  DIFFERENTIAL_POLL_TTL_MS       optional long-poll wait, default 5000 (so running idle costs ~10 s,
                                 not the 40 s of two 20 s polls)
"""
from __future__ import annotations

import importlib
import logging
import os
import time
from typing import Any, Dict, Optional

from .errors import DifferentialError
from .worker import Service

log = logging.getLogger("differential.lambda")
_SAFETY_MARGIN_S = 10.0  # leave time for in-flight jobs to report before Lambda kills us


def load_service(spec: str) -> Service:
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise DifferentialError("DIFFERENTIAL_SERVICE_MODULE must look like 'package.module:service'")
    obj: Any = importlib.import_module(module_name)
    for part in (attr or "service").split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Service) and callable(obj):
        try:  # a factory returning the service
            obj = obj()
        except TypeError:
            pass
    if not isinstance(obj, Service):
        raise DifferentialError(f"{spec} is a {type(obj).__name__}, not a differential.Service")
    return obj


def handler(event: Any = None, context: Any = None) -> Dict[str, Any]:
    spec = os.environ.get("DIFFERENTIAL_SERVICE_MODULE")
    if not spec:
        raise DifferentialError("set DIFFERENTIAL_SERVICE_MODULE to 'package.module:service'")
    service = load_service(spec)  # without a config of its own, start() reads the environment
    max_idle = int(os.environ.get("DIFFERENTIAL_MAX_IDLE_CYCLES", "2"))
    service.poll_ttl_ms = min(20000, max(5000, int(os.environ.get("DIFFERENTIAL_POLL_TTL_MS", "5000"))))
    started = time.monotonic()
    service.start(max_idle_cycles=max_idle)

    def remaining() -> Optional[float]:
        if context is not None and hasattr(context, "get_remaining_time_in_millis"):
            return context.get_remaining_time_in_millis() / 1000.0
        return None

    stopped_by = "idle"
    while service.running:
        left = remaining()
        if left is not None and left < _SAFETY_MARGIN_S:
            stopped_by = "deadline"
            service.stop(timeout=max(1.0, left - 2.0))
            break
        service.wait(0.5)
    stats = service.stats
    log.info("service %s stopped (%s) after %.1fs: %s", service.name, stopped_by, time.monotonic() - started, stats)
    return {"service": service.name, "stoppedBy": stopped_by, "claimed": stats.get("claimed", 0),
            "reported": stats.get("reported", 0)}
