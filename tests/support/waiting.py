"""Waiting on a real signal (a count, a topic, a process), never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 300,
             poll_s: float = 1.0) -> float:
    """Poll ``condition`` until it holds; the seconds it took. Fails naming ``what``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"gave up waiting for {what}"
        time.sleep(poll_s)
    return time.monotonic() - started
