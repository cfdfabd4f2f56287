"""Server faults on the embedded stack: stop or SIGKILL Kafka, Cassandra or Elasticsearch
for the length of a ``with`` block, then start it again through the stack manager's own
service objects and wait until it answers. A test leaves the stack as it found it.

Only a server the stack started (its pid file names a live process) can be faulted: a
stack run by docker-compose or another user is not this suite's to kill, and the test says
so instead of pretending.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from recommender.runtime import find_java, pid_alive
from recommender.settings import StackSettings
from recommender.stack import manager
from recommender.stack.base import Service

STOP_TIMEOUT_S = 60.0


def service(settings: StackSettings, name: str) -> Service:
    """The stack's service object for ``name`` (kafka, cassandra, elasticsearch)."""
    return next(s for s in manager.services(settings) if s.name == name)


def kill(svc: Service) -> None:
    """SIGKILL the server's process group (no shutdown hook runs) and wait until its pid is
    gone and its ports are free, so that it can start again on them."""
    pid = svc.pid()
    assert pid is not None, f"{svc.name} is not running"
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (pid_alive(pid) or svc.busy_ports()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not svc.busy_ports(), f"{svc.name}'s ports are still bound after SIGKILL"
    svc.pid_file.unlink(missing_ok=True)


def start(settings: StackSettings, svc: Service) -> None:
    """Start ``svc`` again and wait until it answers a real request."""
    svc.start(find_java(settings))
    svc.wait_ready(time.monotonic() + settings.startup_timeout_s)


@contextmanager
def down(settings: StackSettings, name: str, *, sigkill: bool = False) -> Iterator[Service]:
    """``name`` stopped (cleanly, or by SIGKILL) inside the block, started and ready after."""
    svc = service(settings, name)
    if svc.pid() is None:
        pytest.fail(f"{name} is not a process of the embedded stack (no live pid in "
                    f"{svc.pid_file}); the fault tests restart servers, so they need the stack "
                    "started by `recommender stack up`, not docker-compose or another user's")
    if sigkill:
        kill(svc)
    else:
        svc.stop(timeout=STOP_TIMEOUT_S)
    try:
        yield svc
    finally:
        start(settings, svc)
