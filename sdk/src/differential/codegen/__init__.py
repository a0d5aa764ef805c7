"""Typed client packages built from a cluster's service definitions (`differential client publish`).

    model.py              what the control-plane answers -> services, functions, parameters
    python_client.py      one typed Python module (a client class per service)
    typescript_client.py  index.d.ts / index.js / package.json for the published TypeScript SDK
    wheel.py              a reproducible wheel of the Python module
    npm_pack.py           a reproducible npm tarball

Everything here is pure: definitions in, bytes out, the same bytes for the same definitions, so a
package's digests say whether anything changed. No network, no clock, no file system.
"""
