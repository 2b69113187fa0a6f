"""Logging to stderr and to `run.logPath` (a directory: one file per role)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from arkor.config import RunConfig

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(run: RunConfig, role: str) -> None:
    """Idempotent; a log directory that cannot be created is reported on stderr, not fatal."""
    root = logging.getLogger()
    if getattr(root, "_arkor_configured", False):
        return
    root.setLevel(run.logLevel.upper())
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(stderr)
    if run.logPath:
        try:
            directory = Path(run.logPath)
            directory.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.WatchedFileHandler(directory / f"{role}.log")
            handler.setFormatter(logging.Formatter(_FORMAT))
            root.addHandler(handler)
        except OSError as exc:
            print(f"arkor: cannot write logs to {run.logPath}: {exc}", file=sys.stderr)
    logging.getLogger("hpack").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    root._arkor_configured = True  # type: ignore[attr-defined]
