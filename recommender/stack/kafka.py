"""Apache Kafka 4.x in KRaft mode, from Maven Central jars: one combined broker+controller,
or on a cluster three of them, each a voter of the controller quorum."""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from recommender.errors import StackError
from recommender.stack.base import TEMPLATES, Service, maven_classpath, pinned_version, render
from recommender.stack.secrets import NODE_NAME, StackSecrets, write_private

if TYPE_CHECKING:
    from recommender.settings import KafkaSettings, StackSettings


class KafkaService(Service):
    kind = "kafka"
    role = "broker,controller"
    version = pinned_version("kafka", "kafka_2.13")
    listeners_template = "kafka-listeners.properties"
    memory_overhead_mb = 250

    @property
    def heap(self) -> str:
        return self.settings.kafka_heap

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_controller_port

    @property
    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    def classpath(self) -> str:
        return ":".join(str(j) for j in maven_classpath("kafka", self.settings.cache_dir))

    def prepare(self, java: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_private(self.config_file, self.config())
        if not (self.data_dir / "meta.properties").exists():
            self.format_storage(java)

    def config(self) -> str:
        """server.properties: the shared settings, then this mode's listeners. On a cluster
        every node votes in the controller quorum, and the internal topics are replicated to
        all nodes with a majority in sync, as the project's own topics are."""
        voters = ",".join(f"{n}@{host}:{self.controller_port}"
                          for n, host in enumerate(self.peers, start=1))
        replicas = len(self.peers)
        return render("kafka-server.properties", self.listeners_template, port=self.port,
                      controller_port=self.controller_port, data_dir=self.data_dir,
                      host=self.host, node_id=self.node, voters=voters, replicas=replicas,
                      min_insync=replicas // 2 + 1, **self.listener_values())

    def listener_values(self) -> dict[str, object]:
        return {}

    def format_storage(self, java: Path) -> None:
        """KRaft needs its log directory formatted with a cluster id before the first start."""
        args = ["-cp", self.classpath(), *self.log_opts(), "kafka.tools.StorageTool", "format",
                "-t", self.cluster_id(), "-c", str(self.config_file), *self.format_args()]
        # Through a java @argument file: what it holds never shows in a process listing.
        argfile = self.home / "format.args"
        write_private(argfile, "\n".join(f'"{a}"' for a in args) + "\n")
        try:
            result = subprocess.run([str(java), f"@{argfile}"], capture_output=True, text=True)
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(f"Formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def cluster_id(self) -> str:
        """The id every node's storage is formatted with: one per stack, kept in its state
        dir, since nodes of different ids refuse to form a quorum."""
        path = self.settings.state_dir / "kafka-cluster-id"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        return path.read_text().strip()

    def format_args(self) -> list[str]:
        return []

    def log_opts(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={TEMPLATES / 'kafka-log4j2.yaml'}"]

    def command(self, java: Path) -> tuple[list[str], dict[str, str]]:
        heap = self.heap
        cmd = [str(java), f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC",
               "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true", *self.log_opts(),
               "-cp", self.classpath(), "kafka.Kafka", str(self.config_file)]
        return cmd, {}

    def quorum_leader(self, java: Path) -> int | None:
        """The node id of the active controller (the KRaft quorum's leader), as Kafka's own
        ``kafka-metadata-quorum describe --status`` reports it; None if no node answers."""
        bootstrap = ",".join(f"{host}:{self.controller_port}" for host in self.peers)
        result = subprocess.run(
            [str(java), "-cp", self.classpath(), *self.log_opts(),
             "org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-controller",
             bootstrap, "describe", "--status"], capture_output=True, text=True, timeout=60)
        for line in result.stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "LeaderId" and value.strip().lstrip("-").isdigit():
                return int(value) if int(value) >= 0 else None
        return None

    def client_settings(self) -> KafkaSettings:
        """The admin's settings, bootstrapping from this node alone."""
        from recommender.stack.connect import admin_settings

        kafka = admin_settings(self.settings).kafka
        return kafka.model_copy(update={"bootstrap_servers": f"{self.host}:{self.port}"})

    def ready(self) -> bool:
        """This node answers as a registered broker of its cluster (which, on a cluster,
        needs a controller quorum)."""
        from recommender.clients import kafka_admin

        admin = kafka_admin(self.client_settings(), request_timeout_ms=3000,
                            client_id="recommender-stack")
        try:
            brokers = admin.describe_cluster().get("brokers") or []
            return any(b["broker_id"] == self.node and not b.get("is_fenced") for b in brokers)
        finally:
            admin.close()


class SecureKafkaService(KafkaService):
    """Clients authenticate with SCRAM-SHA-512 over TLS; ACLs decide what each may do.

    The admin's SCRAM credential is written into the metadata log when the storage is
    formatted (the broker needs it for its own listener); the components' credentials and
    ACLs are added by ``provision`` through the admin.
    """

    listeners_template = "kafka-listeners-secure.properties"

    def __init__(self, settings: StackSettings, node: int = 1) -> None:
        super().__init__(settings, node)
        self.secrets = StackSecrets.of(settings)

    def listener_values(self) -> dict[str, object]:
        from recommender.stack.access import ADMIN

        return {"admin": ADMIN, "admin_password": self.secrets.password(ADMIN),
                "keystore": self.secrets.node_keystore, "ca_cert": self.secrets.ca_cert,
                "node_name": NODE_NAME}

    def format_args(self) -> list[str]:
        from recommender.stack.access import ADMIN

        return ["--add-scram",
                f"SCRAM-SHA-512=[name={ADMIN},password={self.secrets.password(ADMIN)}]"]
