# Entry points; the scripts do the work so CI and developers run exactly the same thing.
.PHONY: test run bootstrap

test:
	scripts/test

bootstrap:
	scripts/bootstrap

# The control-plane's local server (SQLite under .differential/ unless DATABASE_URL is set).
run: bootstrap
	.venv/bin/python -m app
