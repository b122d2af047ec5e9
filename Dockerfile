# One image for every service of docker-compose.yml: worker, beat, Flower, migrations,
# metrics and the sandbox. Build: docker build -t wiraya-outbox .
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# tini runs as the container's first process: it forwards `docker stop`'s SIGTERM to the
# service (PID 1 would ignore it until Celery installs its handlers, and Docker's SIGKILL
# came 10 s later) and reaps orphans. A worker stopped before its handlers exist dies of
# the signal having started nothing: tini reports that (143) as 0, like a warm shutdown.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# The locked dependency versions first (checked against their hashes): this layer is
# rebuilt only when the lock changes, not on every change of the code.
COPY requirements.txt requirements-build.txt requirements-tracing.txt ./
RUN pip install --require-hashes -r requirements.txt -r requirements-build.txt
# --build-arg EXTRAS=tracing adds OpenTelemetry's SDK and exporter (docs/tracing.md), locked too.
ARG EXTRAS=""
RUN if [ -n "$EXTRAS" ]; then pip install --require-hashes -r "requirements-$EXTRAS.txt"; fi

# The project itself (non-editable, nothing more resolved), run as an unprivileged user: a
# fixed uid above the system range (so no --system), without a home or a lastlog entry.
COPY pyproject.toml README.md ./
COPY models ./models
COPY worker ./worker
COPY sandbox ./sandbox
RUN pip install --no-deps --no-build-isolation . \
    && pip check \
    && useradd --uid 10001 --user-group --no-create-home --no-log-init --shell /usr/sbin/nologin outbox

# alembic.ini and migrations/ stay in /app, the working directory of `alembic upgrade head`
# and `outbox migrate`.
COPY alembic.ini ./
COPY migrations ./migrations

USER outbox
EXPOSE 5555 8080 8090 9808
ENTRYPOINT ["tini", "-e", "143", "--"]
CMD ["outbox-celery", "-A", "worker", "worker", "--loglevel", "INFO"]
