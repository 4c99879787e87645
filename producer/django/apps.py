"""The app's configuration: the label its migrations and model live under."""

from __future__ import annotations

from django.apps import AppConfig


class LimechatEventsConfig(AppConfig):
    name = "producer.django"
    # The package's last name ("django") would be a confusing label; the table has its own name.
    label = "limechat_events"
    verbose_name = "LimeChat events"
    default_auto_field = "django.db.models.BigAutoField"
