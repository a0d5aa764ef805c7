# Entry points; the scripts do the work so CI and developers run exactly the same thing.
.PHONY: test run bootstrap bootstrap-dev

# Everything the tests need (requirements/dev.txt, the Node SDK, PostgreSQL), then lint and pytest.
test:
	scripts/test

# Only what serving needs: requirements/app.txt and the SDK with its CLI (.venv/bin/differential).
bootstrap:
	@scripts/bootstrap

bootstrap-dev:
	@scripts/bootstrap --dev

# The control-plane's local server (SQLite under .differential/ unless DATABASE_URL is set).
run: bootstrap
	@.venv/bin/python -m app
