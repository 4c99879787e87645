# The worker image: `limechat-events worker` (also the sandbox, with another command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY producer ./producer
COPY worker ./worker
# The package alone, as `scripts/smoke-artifact` installs it (its dependencies bring kombu's
# Redis transport everything it imports); the build fails here if the worker cannot import.
RUN pip install . \
    && pip check \
    && python -I -c "import kombu.transport.redis, worker.app, worker.transport" \
    && useradd --system --no-create-home limechat

USER limechat
CMD ["limechat-events", "worker"]
