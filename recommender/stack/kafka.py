"""Apache Kafka 4.x as one combined broker+controller in KRaft mode, from Maven Central jars."""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path
from string import Template

from recommender.errors import StackError
from recommender.stack.base import STACK_DIR, Service, maven_classpath, pinned_version

TEMPLATES = STACK_DIR / "templates"


class KafkaService(Service):
    name = "kafka"
    version = pinned_version("kafka", "kafka_2.13")

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
        config = Template((TEMPLATES / "kafka-server.properties").read_text()).substitute(
            port=self.port, controller_port=self.controller_port, data_dir=self.data_dir
        )
        self.config_file.write_text(config)
        if not (self.data_dir / "meta.properties").exists():
            self.format_storage(java)

    def format_storage(self, java: Path) -> None:
        """KRaft needs its log directory formatted with a cluster id before the first start."""
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cmd = [str(java), "-cp", self.classpath(), *self.log_opts(),
               "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config_file)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"Formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def log_opts(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={TEMPLATES / 'kafka-log4j2.yaml'}"]

    def command(self, java: Path) -> tuple[list[str], dict[str, str]]:
        heap = self.settings.kafka_heap
        cmd = [str(java), f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC",
               "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true", *self.log_opts(),
               "-cp", self.classpath(), "kafka.Kafka", str(self.config_file)]
        return cmd, {}

    def ready(self) -> bool:
        from recommender.clients import kafka_admin
        from recommender.settings import KafkaSettings

        admin = kafka_admin(
            KafkaSettings(bootstrap_servers=f"{self.host}:{self.port}"),
            request_timeout_ms=3000, client_id="recommender-stack",
        )
        try:
            return bool(admin.describe_cluster().get("brokers"))
        finally:
            admin.close()
