"""Measured figures of the chaos runs, for docs/reliability.md.

Tests print nothing. With ``LIMECHAT_CHAOS_FIGURES=/some/file.jsonl`` set, each scenario
appends one JSON line of what it measured (events, duplicates, time to recover...), which is
how the table in docs/reliability.md was filled in.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def record(scenario: str, **figures: Any) -> None:
    path = os.environ.get("LIMECHAT_CHAOS_FIGURES")
    if not path:
        return
    row = {"scenario": scenario, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(row, default=str) + "\n")
