"""How a client reaches the embedded stack, as settings: endpoints, and in secure mode the
account's credentials as file paths.

One function, ``connection``, says it; the stack's own readiness checks and provisioning,
``recommender stack env`` (export lines for a shell or a service unit) and the tests all use
it, so they cannot drift apart. Secrets appear only as ``*_file`` paths, never as values.

Example::

    eval "$(recommender stack env --secure --as ingest)" && recommender ingest
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from recommender.settings import Settings, StackSettings
from recommender.stack.access import ADMIN, component
from recommender.stack.base import node_host
from recommender.stack.secrets import StackSecrets

API_ACCOUNT = "api"  # the account whose settings carry the API's own key
# The fields that say where a client connects and as whom: replaced as a whole, so nothing of
# another identity (a password, an API key) survives a switch of account.
CONNECTION_FIELDS: dict[str, set[str]] = {
    "kafka": {"bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_username",
              "sasl_password", "sasl_password_file", "ssl_cafile"},
    "cassandra": {"contact_points", "port", "username", "password", "password_file"},
    "elasticsearch": {"url", "api_key", "api_key_file", "username", "password",
                      "password_file", "ca_certs", "verify_certs"},
    "api": {"api_key", "api_key_file"},
}


def connection(stack: StackSettings, account: str | None = None) -> dict[str, dict[str, Any]]:
    """Settings sections that point a client at this stack; with ``account`` on the secure
    stack, also its credentials (files) and the CA to trust; on a cluster, every node, the
    Spark master, and the replication and consistency a cluster wants."""
    stack = stack.active()
    hosts = [node_host(n) for n in range(1, stack.nodes + 1)]
    scheme = "https" if stack.secure else "http"
    sections: dict[str, dict[str, Any]] = {
        "kafka": {"bootstrap_servers": ",".join(f"{h}:{stack.kafka_port}" for h in hosts)},
        "cassandra": {"contact_points": hosts, "port": stack.cassandra_port},
        "elasticsearch": {"url": ",".join(f"{scheme}://{h}:{stack.elasticsearch_port}"
                                          for h in hosts)},
    }
    if stack.nodes > 1:
        add_cluster_settings(sections, stack)
    if stack.secure:
        add_credentials(sections, StackSecrets.of(stack), account)
    return sections


# What a job on the embedded cluster runs with: executors of 1 core on the workers, and a job
# takes 2 of them, so ingest, the predictor, training and a rollover's second predictor all
# find cores at once; the driver only plans and collects.
CLUSTER_SPARK = {"cores_max": 2, "executor_cores": 1, "driver_memory": "1g",
                 "executor_memory": "1g"}


def add_cluster_settings(sections: dict[str, dict[str, Any]], stack: StackSettings) -> None:
    """Replicas on every node with a majority in sync or answering, and the Spark master."""
    replicas = stack.nodes
    majority = replicas // 2 + 1
    sections["kafka"].update(replication_factor=replicas, min_insync_replicas=majority)
    sections["cassandra"].update(replication_factor=replicas, consistency_level="LOCAL_QUORUM")
    sections["elasticsearch"].update(number_of_replicas=1)
    sections["spark"] = {"master": f"spark://{node_host(1)}:{stack.spark_master_port}",
                         "driver_host": node_host(1), **CLUSTER_SPARK}


def add_credentials(sections: dict[str, dict[str, Any]], secrets: StackSecrets,
                    account: str | None) -> None:
    ca = str(secrets.ca_cert)
    sections["kafka"].update(security_protocol="SASL_SSL", ssl_cafile=ca)
    sections["elasticsearch"]["ca_certs"] = ca
    if account is None:
        return
    if account != ADMIN:
        component(account)  # a typo fails here, not as a puzzling authentication error
    password = str(secrets.password_file(account))
    sections["kafka"].update(sasl_mechanism="SCRAM-SHA-512", sasl_username=account,
                             sasl_password_file=password)
    sections["cassandra"].update(username=account, password_file=password)
    sections["elasticsearch"].update(username=account, password_file=password)
    if account == API_ACCOUNT:
        sections["api"] = {"api_key_file": str(secrets.api_key_file)}


def as_account(settings: Settings, stack: StackSettings, account: str | None) -> Settings:
    """``settings`` (names, tuning) reaching the embedded stack as ``account``. Sections are
    rebuilt and validated, so ``*_file`` secrets are read."""
    update = {}
    for section, fields in connection(stack, account).items():
        current = getattr(settings, section)
        kept = current.model_dump(exclude=CONNECTION_FIELDS.get(section, set()) | set(fields))
        update[section] = type(current)(**kept, **fields)
    return settings.model_copy(update=update)


def admin_settings(stack: StackSettings, names: Settings | None = None) -> Settings:
    """What the stack itself uses to check and provision its servers: the admin account
    (secure) or no account (plain), with the topic and keyspace names of ``names``. Built
    from defaults, not the environment, so a component's credentials in the shell never
    stand in for the admin's."""
    base = names or Settings.model_construct()
    return as_account(base, stack, ADMIN if stack.secure else None)


def env_lines(stack: StackSettings, account: str | None = None) -> list[str]:
    """``export RECOMMENDER_...=...`` lines for ``connection(stack, account)``, after a
    comment saying which commands the account is for."""
    values: dict[str, Any] = {"RECOMMENDER_STACK__SECURE": str(stack.secure).lower(),
                              "RECOMMENDER_STACK__NODES": str(stack.nodes)}
    for section, fields in connection(stack, account).items():
        for name, value in fields.items():
            text = json.dumps(value) if isinstance(value, list) else str(value)
            values[f"RECOMMENDER_{section.upper()}__{name.upper()}"] = text
    return [heading(stack, account),
            *(f"export {key}={shlex.quote(value)}" for key, value in values.items())]


def heading(stack: StackSettings, account: str | None) -> str:
    if stack.nodes > 1:
        return f"# local cluster of {stack.nodes} nodes of each server: no credentials"
    if not stack.secure:
        return "# plain stack: no credentials"
    if account is None:
        return "# secure stack: endpoints and CA only (--as ACCOUNT adds credentials)"
    if account == ADMIN:
        return "# secure stack as admin"
    return f"# secure stack as {account}, for: {component(account).runs}"
