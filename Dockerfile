# syntax=docker/dockerfile:1
#
# One image for every NotifyHub process: `notifyhub serve` (the default), `notifyhub migrate`,
# `notifyhub worker` and `notifyhub consume`. Pick one with the command:
#   docker run --rm -p 8004:8004 notifyhub            # serve (embedded defaults: SQLite)
#   docker run --rm notifyhub migrate                 # with NOTIFYHUB_DATABASE_URL set
#
# Stage 1 builds the wheel and installs it into a virtualenv; stage 2 copies only that
# virtualenv, so no build tooling, sources or tests end up in the image.

FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, read from pyproject.toml: this layer is rebuilt only when they change,
# not on every code change. Every dependency ships manylinux wheels, so no compiler is needed.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --requirement /tmp/requirements.txt

# Then the project itself, as a wheel (not an editable install: the image holds no sources).
COPY . .
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/notifyhub --help > /dev/null


FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="notifyhub" \
      org.opencontainers.image.description="Realtime notifications and messaging hub"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NOTIFYHUB_HOST=0.0.0.0 \
    NOTIFYHUB_PORT=8004

# A fixed numeric uid/gid, so `runAsNonRoot` checks (Kubernetes) can verify it and volume
# ownership is predictable.
RUN groupadd --system --gid 10001 notifyhub \
    && useradd --system --uid 10001 --gid notifyhub --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin notifyhub

# The virtualenv stays root-owned: the service user can run the code but not change it.
COPY --from=build /opt/venv /opt/venv

# The working directory is the user's, so the embedded profile (an SQLite file in ./) works
# with a plain `docker run`. Settings also read ./.env; none is shipped (.dockerignore).
WORKDIR /app
RUN chown notifyhub:notifyhub /app

USER 10001:10001

EXPOSE 8004

# Liveness of `serve` (slim has no curl). Processes that serve no HTTP override it in their
# compose service: `migrate` disables it, `worker` / `consume` run `notifyhub healthcheck`
# (their heartbeat file); compose's hub probes /readyz instead, for readiness.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('NOTIFYHUB_PORT', '8004'), timeout=4)" || exit 1

ENTRYPOINT ["notifyhub"]
CMD ["serve"]
