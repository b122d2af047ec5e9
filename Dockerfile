# One image for every service of docker-compose.yml: worker, beat, Flower, migrations,
# metrics and the sandbox. Build: docker build -t wiraya-outbox .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The project and its dependencies (non-editable), run as an unprivileged user.
COPY pyproject.toml README.md ./
COPY models ./models
COPY worker ./worker
COPY sandbox ./sandbox
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin outbox

# alembic.ini and migrations/ stay in /app, the working directory of `alembic upgrade head`
# and `outbox migrate`.
COPY alembic.ini ./
COPY migrations ./migrations

USER outbox
EXPOSE 5555 8080 8090 9808
CMD ["celery", "-A", "worker", "worker", "--loglevel", "INFO"]
