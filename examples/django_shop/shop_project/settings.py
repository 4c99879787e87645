"""Settings of the example shop: PostgreSQL from DATABASE_URL, the queue from REDIS_URL."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote, urlsplit


def database_from_url(url: str) -> dict[str, object]:
    """Django's DATABASES entry for ``postgresql://user:password@host:port/name?options``.

    Query parameters become psycopg connection options (``?options=-csearch_path%3Dshop``).
    ``sqlite:///path/to/file.db`` is SQLite (the outbox relay's fallback is tested on it).
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path)}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),
    }


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-shop-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "producer.django",  # the outbox table and `manage.py limechat_outbox_relay`
    "shop",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "shop_project.urls"
WSGI_APPLICATION = "shop_project.wsgi.application"

DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/django_shop")
    )
}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "producer": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")}
    },
}
