"""The base install imports no optional extra: a web app without them must still start."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT

EXTRAS = ("sqlalchemy", "psycopg", "django", "fastapi", "flask_sqlalchemy")


def test_producer_and_the_cli_import_no_extra() -> None:
    # A fresh interpreter: this one has loaded the extras for other tests.
    code = (
        "import json, sys, producer, producer.outbox, worker.cli; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({EXTRAS!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []
