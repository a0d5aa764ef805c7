"""Service bundles for `differential deploy create`: the zip a Lambda function runs.

`python.build(...)` packages a service written with this SDK (its modules, its requirements and
this SDK, installed as wheels for Lambda's Linux x86_64); `node.build(...)` packages one written
with the published `@differentialhq/core` (package.json, its production dependencies and a
generated entry point). Both write the zip with `zipping.write_zip`, so that the same sources give
the same bytes (sorted entries, fixed timestamps and modes) and the size limits live in one place.
"""
from .zipping import Bundle, BundleError

__all__ = ["Bundle", "BundleError"]
