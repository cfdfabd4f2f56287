"""Apache Cassandra 5.0 from Maven Central jars: one node, or a cluster of nodes on
127.0.0.1, 127.0.0.2 ... that are all seeds, as ccm starts them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from recommender.errors import StackError
from recommender.stack.base import (
    TEMPLATES,
    Service,
    maven_classpath,
    pinned_version,
    port_in_use,
    render,
)

if TYPE_CHECKING:
    from cassandra.auth import AuthProvider

# The "JPMS" and "Netty Options" lines of Cassandra's conf/jvm17-server.options, verbatim (the
# java.nio line comes from its latest revision): without them Java 17 refuses the reflection
# Cassandra, jamm and Chronicle rely on, and startup fails.
JVM17_OPTIONS = (
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "--add-opens", "java.base/java.nio=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)


class CassandraService(Service):
    """One seed node on its loopback address, config from ``stack/templates/cassandra-*``.

    Cassandra mlockall()s its memory at startup when it may (as root it always may), so the
    whole heap is resident from the first second: RSS is about the heap plus ~450 MiB, and
    ``settings.cassandra_heap`` is the knob that sizes it.
    """

    kind = "cassandra"
    role = "seed"
    memory_overhead_mb = 450
    version = pinned_version("cassandra", "cassandra-all")
    authenticator = "AllowAllAuthenticator"
    authorizer = "AllowAllAuthorizer"
    _release_version: str | None = None  # what the node last reported, set by ready()

    @property
    def port(self) -> int:
        return self.settings.cassandra_port

    @property
    def storage_port(self) -> int:
        return self.settings.cassandra_storage_port

    @property
    def jmx_port(self) -> int:
        """JMX listens on 127.0.0.1 whatever the node's address: one port per node."""
        return self.settings.cassandra_jmx_port + self.node - 1

    @property
    def heap(self) -> str:
        return self.settings.cassandra_heap

    @property
    def ports(self) -> list[int]:
        """CQL, internode storage, and JMX (bound to loopback only, for ``nodetool``)."""
        return [self.port, self.storage_port, self.jmx_port]

    @property
    def config_file(self) -> Path:
        return self.home / "cassandra.yaml"

    @property
    def triggers_dir(self) -> Path:
        return self.home / "triggers"

    def classpath(self) -> list[Path]:
        return maven_classpath("cassandra", self.settings.cache_dir)

    def prepare(self, java: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.triggers_dir.mkdir(exist_ok=True)  # Cassandra warns at every start when it is missing
        self.config_file.write_text(render(
            "cassandra-server.yaml", host=self.host, port=self.port,
            seeds=",".join(f"{host}:{self.storage_port}" for host in self.peers),
            storage_port=self.storage_port, data_dir=self.data_dir,
            authenticator=self.authenticator, authorizer=self.authorizer,
        ))

    def jamm_agent(self, jars: list[Path]) -> Path:
        """Cassandra measures object sizes (memtables, caches) with the jamm agent; it must load."""
        for jar in jars:
            if jar.name.startswith("jamm-"):
                return jar
        raise StackError("jamm is missing from the Cassandra classpath (stack/cassandra/pom.xml).")

    def command(self, java: Path) -> tuple[list[str], dict[str, str]]:
        heap = self.heap
        jars = self.classpath()
        cmd = [
            str(java), f"-Xms{heap}", f"-Xmx{heap}", "-Xss256k",
            # G1 as upstream, minus the settings meant for large heaps; direct memory kept small
            # because the file and networking caches in cassandra-server.yaml are small.
            "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxGCPauseMillis=300",
            "-XX:MaxDirectMemorySize=256m", "-XX:+PerfDisableSharedMem",
            # After an OOM the node's state is undefined: exit so the stack reports it down.
            "-XX:+ExitOnOutOfMemoryError",
            "-ea", "-da:net.openhft...", "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            *JVM17_OPTIONS,
            f"-javaagent:{self.jamm_agent(jars)}",
            # Without cassandra-foreground the daemon closes stdout, our only log.
            "-Dcassandra-foreground=yes",
            f"-Dcassandra.config={self.config_file.as_uri()}",
            f"-Dcassandra.storagedir={self.data_dir}",
            f"-Dcassandra.logdir={self.log_file.parent}",
            f"-Dcassandra.triggers_dir={self.triggers_dir}",
            f"-Dlogback.configurationFile={TEMPLATES / 'cassandra-logback.xml'}",
            # JMX on loopback only, so nodetool works and nothing is exposed.
            f"-Dcassandra.jmx.local.port={self.jmx_port}",
            "-Dcom.sun.management.jmxremote.authenticate=false",
            # A lone seed has nobody to gossip with, and the seeds of a new cluster learn of
            # each other as they come: neither wait for gossip to settle at start nor linger
            # announcing the shutdown at stop.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.shutdown_announce_in_ms=0",
            # With authentication on, the default superuser (replaced at once by provisioning)
            # is created as soon as the node is up rather than 10 s later.
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-cp", ":".join(str(j) for j in jars),
            "org.apache.cassandra.service.CassandraDaemon",
        ]
        # As upstream cassandra-env.sh: fewer glibc malloc arenas, less native memory.
        return cmd, {"MALLOC_ARENA_MAX": "4"}

    def ready(self) -> bool:
        """Ask CQL for the release version; the native transport opens last, after startup."""
        if not port_in_use(self.host, self.port):
            return False  # spares the driver's connection-error warnings while Cassandra boots
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import WhiteListRoundRobinPolicy

        profile = ExecutionProfile(
            load_balancing_policy=WhiteListRoundRobinPolicy([self.host]), request_timeout=5
        )
        cluster = Cluster(
            [self.host], port=self.port, protocol_version=5, connect_timeout=3,
            control_connection_timeout=3, auth_provider=self.auth_provider(),
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            schema_metadata_enabled=False, token_metadata_enabled=False,
        )
        try:
            row = cluster.connect().execute("SELECT release_version FROM system.local").one()
        finally:
            cluster.shutdown()
        self._release_version = row.release_version if row else None
        return self._release_version is not None

    def auth_provider(self) -> AuthProvider | None:
        return None

    def server_version(self) -> str:
        """The version the running node reports (read by ``ready``), else the pinned one."""
        return self._release_version or self.version


class SecureCassandraService(CassandraService):
    """PasswordAuthenticator and CassandraAuthorizer. Until provisioning has replaced the
    default ``cassandra`` superuser by the stack's admin, the node is "ready" when it answers
    the authentication handshake at all: a refusal of the admin is a live node's answer."""

    authenticator = "PasswordAuthenticator"
    authorizer = "CassandraAuthorizer"

    def auth_provider(self) -> AuthProvider | None:
        from cassandra.auth import PlainTextAuthProvider

        from recommender.stack.access import ADMIN
        from recommender.stack.secrets import StackSecrets

        password = StackSecrets.of(self.settings).password(ADMIN)
        return PlainTextAuthProvider(username=ADMIN, password=password)

    def ready(self) -> bool:
        from cassandra.cluster import NoHostAvailable

        from recommender.stack.provision import refused_login

        try:
            return super().ready()
        except NoHostAvailable as exc:
            if refused_login(exc):
                return True
            raise
