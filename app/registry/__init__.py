"""The client-library registry's logic: package names, the npm packument, the Python simple index.

No Flask here: api/registry.py parses the request and answers; these modules decide the names and
build the documents from rows the engine (engine/client_libraries.py) hands them.
"""
