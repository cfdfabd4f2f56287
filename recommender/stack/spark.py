"""A Spark standalone cluster from PySpark's own jars: one master, and workers on 127.0.0.1,
127.0.0.2 ... whose executors run the jobs (``spark.master=spark://...``).

Only a cluster stack (``stack.nodes`` > 1) runs them; the single-node stack's jobs run Spark
in their own process (``local[*]``). Each daemon gets ``SPARK_LOCAL_IP``, so it, its web UI
and the executors it starts listen on its loopback address and nowhere else.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from recommender.stack.base import Service, node_host

WEBUI_OFFSET = 1000  # web UI ports sit this far above the daemon's port


def spark_home() -> Path:
    """The PySpark package: its ``jars/`` and ``bin/`` are a Spark distribution."""
    import pyspark

    return Path(pyspark.__file__).parent


class SparkDaemon(Service):
    """What the master and a worker share: ``bin/spark-class`` with a small heap."""

    daemon_class: str
    memory_overhead_mb = 150

    @property
    def version(self) -> str:  # type: ignore[override]
        import pyspark

        return pyspark.__version__

    @property
    def heap(self) -> str:
        return self.settings.spark_daemon_heap

    @property
    def webui_port(self) -> int:
        return self.port + WEBUI_OFFSET

    @property
    def ports(self) -> list[int]:
        return [self.port, self.webui_port]

    @property
    def master_url(self) -> str:
        return f"spark://{node_host(1)}:{self.settings.spark_master_port}"

    def prepare(self, java: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def daemon_args(self) -> list[str]:
        return []

    def command(self, java: Path) -> tuple[list[str], dict[str, str]]:
        home = spark_home()
        env = {"SPARK_HOME": str(home), "JAVA_HOME": str(java.resolve().parents[1]),
               "SPARK_LOCAL_IP": self.host, "SPARK_DAEMON_MEMORY": self.heap,
               "SPARK_LOG_DIR": str(self.log_file.parent), "SPARK_NO_DAEMONIZE": "1"}
        cmd = [str(home / "bin" / "spark-class"), self.daemon_class, "--host", self.host,
               "--port", str(self.port), "--webui-port", str(self.webui_port),
               *self.daemon_args()]
        return cmd, env

    def master_state(self) -> dict[str, Any]:
        """The master's own JSON view of the cluster (its web UI's ``/json``)."""
        url = f"http://{node_host(1)}:{self.settings.spark_master_port + WEBUI_OFFSET}/json/"
        with urllib.request.urlopen(url, timeout=3) as response:
            return json.load(response)


class SparkMasterService(SparkDaemon):
    kind = "spark-master"
    role = "master"
    daemon_class = "org.apache.spark.deploy.master.Master"

    @property
    def port(self) -> int:
        return self.settings.spark_master_port

    def ready(self) -> bool:
        return self.master_state().get("status") == "ALIVE"


class SparkWorkerService(SparkDaemon):
    """A worker offering ``spark_worker_cores`` and ``spark_worker_memory`` to executors, and
    cleaning up the directories of finished applications."""

    kind = "spark-worker"
    role = "worker"
    daemon_class = "org.apache.spark.deploy.worker.Worker"

    @property
    def port(self) -> int:
        return self.settings.spark_master_port + 1

    def daemon_args(self) -> list[str]:
        return ["--cores", str(self.settings.spark_worker_cores),
                "--memory", self.settings.spark_worker_memory,
                "--work-dir", str(self.data_dir), self.master_url]

    def command(self, java: Path) -> tuple[list[str], dict[str, str]]:
        cmd, env = super().command(java)
        opts = "-Dspark.worker.cleanup.enabled=true -Dspark.worker.cleanup.appDataTtl=3600"
        return cmd, {**env, "SPARK_WORKER_OPTS": opts}

    def ready(self) -> bool:
        """Registered with the master and alive there."""
        return any(w.get("host") == self.host and w.get("state") == "ALIVE"
                   for w in self.master_state().get("workers", []))
