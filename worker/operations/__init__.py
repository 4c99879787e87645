"""The operations layer: what operators do, as plain functions returning plain data.

The CLI (``worker/cli/``) and the web console are two faces over it: each parses its input,
calls one operation, and renders the result. Nothing here prints, exits or needs LimeChat
credentials. Build an :class:`Ops` once (``Ops.from_env(os.environ)``) and pass it to each
call. Errors: ``producer.errors.ConfigError`` (a malformed setting, named),
``worker.selection.SelectionError`` (a filter or cursor that cannot be read),
:class:`StoreError` (Redis failed; password hidden), :class:`ImportRefused` (bad lines).
See docs/operations.md.
"""

from __future__ import annotations

from ..selection import Selection, SelectionError
from .context import Ops
from .dlq import (
    Export,
    Page,
    Preview,
    entries,
    entry,
    list_page,
    parse_selection,
    preview,
    purge,
    replay,
    work_size,
)
from .errors import ImportRefused, OperationError, StoreError
from .imports import Imported, import_entries, queue_events, read_entries
from .inspect import RETRIES_LIMIT, Health, health, rate_limits, retries, snapshot
from .sending import CheckedFile, check_file

__all__ = [
    "RETRIES_LIMIT",
    "CheckedFile",
    "Export",
    "Health",
    "ImportRefused",
    "Imported",
    "OperationError",
    "Ops",
    "Page",
    "Preview",
    "Selection",
    "SelectionError",
    "StoreError",
    "check_file",
    "entries",
    "entry",
    "health",
    "import_entries",
    "list_page",
    "parse_selection",
    "preview",
    "purge",
    "queue_events",
    "rate_limits",
    "read_entries",
    "replay",
    "retries",
    "snapshot",
    "work_size",
]
