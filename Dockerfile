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
RUN pip install . && useradd --system --no-create-home limechat

USER limechat
CMD ["limechat-events", "worker"]
