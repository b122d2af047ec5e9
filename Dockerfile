# One image for every service of docker-compose.yml: worker, beat, Flower, migrations,
# metrics and the sandbox. Build: docker build -t wiraya-outbox .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The locked dependency versions first (checked against their hashes): this layer is
# rebuilt only when the lock changes, not on every change of the code.
COPY requirements.txt requirements-build.txt ./
RUN pip install --require-hashes -r requirements.txt -r requirements-build.txt

# The project itself (non-editable, nothing more resolved), run as an unprivileged user.
COPY pyproject.toml README.md ./
COPY models ./models
COPY worker ./worker
COPY sandbox ./sandbox
RUN pip install --no-deps --no-build-isolation . \
    && pip check \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin outbox

# alembic.ini and migrations/ stay in /app, the working directory of `alembic upgrade head`
# and `outbox migrate`.
COPY alembic.ini ./
COPY migrations ./migrations

USER outbox
EXPOSE 5555 8080 9808
CMD ["celery", "-A", "worker", "worker", "--loglevel", "INFO"]
