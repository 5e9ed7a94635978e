"""sheaf's event log: one line per event, to the standard error of the moment."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from sheaf.deploy.logs import configure_logging


def test_the_default_handler_writes_to_standard_error_as_it_is_when_an_event_is_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A CLI runner swaps standard error for each command and closes it afterwards; a handler
    # that kept the first stream would fail ("--- Logging error ---") on every later event.
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler = configure_logging()
    try:
        first.close()
        later = io.StringIO()
        monkeypatch.setattr(sys, "stderr", later)
        logging.getLogger("sheaf.test").warning("still heard")
        assert later.getvalue().endswith("WARNING sheaf.test still heard\n")
    finally:
        logging.getLogger("sheaf").removeHandler(handler)


def test_a_given_stream_gets_the_events() -> None:
    out = io.StringIO()
    handler = configure_logging(stream=out, as_json=True)
    try:
        logging.getLogger("sheaf.test").info("joined")
    finally:
        logging.getLogger("sheaf").removeHandler(handler)
    assert '"event": "joined"' in out.getvalue()
