"""Secrets stay secret: private files in the stack's state directory, referenced by path in
every setting, and never written to a log (servers' or components')."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from recommender.settings import StackSettings, as_env
from recommender.stack import manager
from recommender.stack.access import ACCOUNTS
from recommender.stack.secrets import StackSecrets
from tests.secure.conftest import Components


def secret_values(stack: StackSettings) -> dict[str, str]:
    secrets = StackSecrets.of(stack)
    values = {account: secrets.password(account) for account in ACCOUNTS}
    return {**values, "api key": secrets.api_key_file.read_text().strip()}


def test_secrets_are_private_files(secure_stack: StackSettings):
    secrets = StackSecrets.of(secure_stack)
    assert stat.S_IMODE(secrets.dir.stat().st_mode) == 0o700
    for path in secrets.dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_stack_env_and_child_environments_name_files_not_secrets(secure_stack: StackSettings,
                                                                  components: Components):
    printed = subprocess.run(
        [sys.executable, "-m", "recommender", "stack", "env", "--secure", "--as", "api"],
        capture_output=True, text=True, env=as_env(components.settings), check=True).stdout
    assert "RECOMMENDER_KAFKA__SASL_PASSWORD_FILE=" in printed
    assert "RECOMMENDER_API__API_KEY_FILE=" in printed
    environment = "\n".join(components.env("api").values())
    for name, value in secret_values(secure_stack).items():
        assert value not in printed, name
        assert value not in environment, name


def test_no_secret_in_any_log(secure_stack: StackSettings, components: Components):
    """Server logs of the secure stack, and the output of every component the session ran."""
    logs = [*components.logs, *server_logs(secure_stack)]
    assert len(components.logs) >= 5, "the end-to-end test did not run before this one"
    for log in logs:
        text = log.read_text(errors="replace")
        for name, value in secret_values(secure_stack).items():
            assert value not in text, f"the {name} secret is in {log}"


def server_logs(stack: StackSettings) -> list[Path]:
    directories = set()
    for service in manager.services(stack):
        directories.add(service.log_file.parent)
        directories.add(getattr(service, "logs_dir", service.log_file.parent))
    return [p for d in directories if d.exists() for p in d.rglob("*") if p.is_file()]
