"""Structured logs for servers and clients: one event per line, as logfmt or JSON.

Every line is an *event* with named fields, so operators can grep or parse it::

    2025-05-01T10:00:00.123Z INFO  sheaf.server round_done round=3 completed=4 failed=0 seconds=0.41
    {"ts": "2025-05-01T10:00:00.123Z", "level": "INFO", "logger": "sheaf.server", "event": "round_done", ...}

Example:
    >>> import io, logging
    >>> out = io.StringIO()
    >>> handler = configure_logging(stream=out)
    >>> log_event(logging.getLogger("sheaf.server"), logging.INFO, "listening", address="localhost:7443")
    >>> out.getvalue().split(" ", 1)[1]
    'INFO  sheaf.server listening address=localhost:7443\\n'
    >>> logging.getLogger("sheaf").removeHandler(handler)
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import Any, TextIO

__all__ = ["configure_logging", "log_event"]

_FIELDS = "sheaf_fields"


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log one event with named fields."""
    logger.log(level, event, extra={_FIELDS: fields})


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    return str(value)


def _logfmt(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, dict | list) else str(value)
    if text == "" or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


class _EventFormatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields = {k: _clean(v) for k, v in getattr(record, _FIELDS, {}).items()}
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        message = record.getMessage()
        if self.as_json:
            line = {"ts": stamp, "level": record.levelname, "logger": record.name, "event": message, **fields}
            return json.dumps(line)
        pairs = " ".join(f"{k}={_logfmt(v)}" for k, v in fields.items())
        return f"{stamp} {record.levelname:<5} {record.name} {message}" + (f" {pairs}" if pairs else "")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each event to ``sys.stderr`` as it is at that moment, not as it was when the
    handler was made: a caller that swaps standard error (a CLI runner, a test) and closes
    its stream afterwards leaves no handler behind that writes to a closed file."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(
    *, as_json: bool = False, level: int = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send sheaf's logs to ``stream`` (default standard error), one event per line.

    Returns:
        The handler (replacing one an earlier call installed), to remove it again.
    """
    handler: logging.Handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(_EventFormatter(as_json))
    handler.set_name("sheaf-events")
    logger = logging.getLogger("sheaf")
    for old in [h for h in logger.handlers if h.get_name() == "sheaf-events"]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
