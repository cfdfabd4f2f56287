"""The secure stack for the secure-mode tests, and components run as they are in production.

The secure stack has its own state directory and ports (``stack.secure_port_offset``), so it
never touches a running plain stack: ``make test`` runs the plain suite first (which stops
the plain stack it started) and then this directory in a pytest of its own. The session
starts the secure stack unless it is already up, and stops it at the end only if it started
it. Topics and the keyspace are private to the session and provisioned by the admin, as
``recommender stack provision`` does.

Every component runs as a separate ``python -m recommender`` process whose only
configuration is its environment: the ``RECOMMENDER_*`` variables ``as_env`` writes for the
component's account, with secrets given as file paths.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from recommender.settings import Settings, StackSettings, as_env
from recommender.stack.connect import as_account
from recommender.stack.provision import provision
from recommender.stack.secrets import StackSecrets
from tests.support.fixtures import running
from tests.support.names import forget_replay_progress

SITE = "https://shop.example"  # the one origin the API's CORS policy allows in these tests


@pytest.fixture(scope="session")
def secure_stack(settings: Settings) -> Iterator[StackSettings]:
    stack = settings.stack.model_copy(update={"secure": True})
    # only replay progress is forgotten: the topics stay, only the admin may drop them
    with running(stack, "the secure stack", lambda: forget_replay_progress()):
        yield stack


@pytest.fixture(scope="session")
def secure_settings(settings: Settings, secure_stack: StackSettings) -> Settings:
    """The session's private topics and keyspace on the secure stack, provisioned by its
    admin. Elasticsearch names stay the defaults: the secure stack is a cluster of its own
    (``stack.secure_state_dir``), and its file-realm roles name the default indices."""
    names = settings.model_copy(update={
        "stack": secure_stack,
        "elasticsearch": settings.elasticsearch.model_copy(update={"index_prefix": ""})})
    provision(names, on_event=print)
    return names


@dataclass
class Components:
    """Runs components as separate processes configured by their environment only, and
    keeps each one's output (checked later for leaked secrets)."""

    settings: Settings
    log_dir: Path
    logs: list[Path] = field(default_factory=list)

    def settings_of(self, account: str) -> Settings:
        return as_account(self.settings, self.settings.stack, account)

    def env(self, account: str) -> dict[str, str]:
        return as_env(self.settings_of(account))

    def log_file(self, account: str) -> Path:
        path = self.log_dir / f"{len(self.logs):02d}-{account}.log"
        self.logs.append(path)
        return path

    def run(self, account: str, *args: str, timeout: float = 600) -> str:
        """``recommender ARGS`` as ``account`` to completion; its output, or a failure."""
        log = self.log_file(account)
        with open(log, "wb") as out:
            result = subprocess.run([sys.executable, "-m", "recommender", *args],
                                    env=self.env(account), stdout=out,
                                    stderr=subprocess.STDOUT, timeout=timeout)
        output = log.read_text(errors="replace")
        assert result.returncode == 0, f"{account}: recommender {' '.join(args)}:\n{output[-4000:]}"
        return output

    def start(self, account: str, *args: str) -> subprocess.Popen:
        """``recommender ARGS`` as ``account`` in the background (stop it with ``stop``)."""
        with open(self.log_file(account), "wb") as out:
            return subprocess.Popen([sys.executable, "-m", "recommender", *args],
                                    env=self.env(account), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen, timeout: float = 120) -> None:
    """SIGTERM (jobs finish their micro-batch), SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def components(secure_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Components:
    settings = secure_settings.model_copy(
        update={"api": secure_settings.api.model_copy(update={"cors_origins": [SITE]})})
    return Components(settings, tmp_path_factory.mktemp("component-logs"))


@pytest.fixture(scope="session")
def api_key(secure_stack: StackSettings) -> SecretStr:
    """What the website is given: the key of the API's write endpoints (a SecretStr, so a
    failing test's report does not print it)."""
    return SecretStr(StackSecrets.of(secure_stack).api_key_file.read_text().strip())


@pytest.fixture(scope="session")
def api(components: Components) -> Iterator[str]:
    """``recommender serve`` as the api account; its base URL once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = components.start("api", "serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/health", timeout=10)
            break
        except httpx.TransportError:
            assert process.poll() is None, "the API exited at start"
            assert time.monotonic() < deadline, "the API did not answer within 60 s"
            time.sleep(0.5)
    yield url
    stop(process)
