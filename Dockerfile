# The control-plane image: only the app and its runtime dependencies (requirements/app.txt),
# run by an unprivileged user with gunicorn on $PORT (4000, the internal_port of fly.toml).
# It refuses to start without DATABASE_URL: a container's SQLite file would vanish with every
# deploy. (To keep SQLite anyway, mount a volume and set DATABASE_URL=sqlite:////var/lib/differential/differential.db.)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=4000 \
    DIFFERENTIAL_DATA_DIR=/var/lib/differential \
    DIFFERENTIAL_REQUIRE_DATABASE_URL=true

WORKDIR /srv

# Dependencies first, so that a code change does not reinstall them.
COPY requirements/app.txt requirements/app.txt
RUN pip install --no-cache-dir -r requirements/app.txt

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin differential \
    && mkdir -p /var/lib/differential \
    && chown differential /var/lib/differential

COPY gunicorn.conf.py ./
COPY app ./app

USER differential
EXPOSE 4000

# The same liveness route that fly.toml checks; python is there anyway, curl is not.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/live' % os.environ.get('PORT', '4000'), timeout=4)"]

# Migrations run at start-up inside the app (safe with several replicas), so no release step.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app.wsgi:app"]
