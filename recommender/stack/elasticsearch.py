"""Elasticsearch 8.x from the integ-test zip on Maven Central: a single-node cluster, or
nodes on 127.0.0.1, 127.0.0.2 ... that discover each other through seed hosts, every one
master-eligible and holding data.

That distribution is the server plus x-pack core/security only: no bundled JDK (the stack's
JDK 17 runs it), no analysis-common, ingest-common, painless or mapper-extras modules.

Elasticsearch refuses to run as root, so when the stack is started as root the server runs as
``nobody``. Every file the server touches (distribution, config, data, logs, tmp) must then be
reachable by ``nobody`` through its absolute path, which the default state dir under a 0700
``/root`` is not. In that case, and only then, those files live in a root-owned, persistent
``/var/lib/recommender/elasticsearch-<hash of the state dir>`` instead; the pid file and the
console log stay in the state dir, and ``status`` reports the real data dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from recommender.errors import StackError
from recommender.settings import StackSettings
from recommender.stack.base import (
    UNPRIVILEGED_USER,
    Service,
    maven_classpath,
    pinned_version,
    render,
)
from recommender.stack.secrets import write_private

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

RELOCATED_ROOT = Path("/var/lib/recommender")


class ElasticsearchService(Service):
    kind = "elasticsearch"
    role = "master-eligible,data"
    memory_overhead_mb = 500
    version = pinned_version("elasticsearch", "elasticsearch")
    security_template = "elasticsearch-security-off.yml"

    def __init__(self, settings: StackSettings, node: int = 1) -> None:
        super().__init__(settings, node)
        self.base_dir = self.server_dir()
        self.data_dir = self.base_dir / "data"

    @property
    def port(self) -> int:
        return self.settings.elasticsearch_port

    @property
    def transport_port(self) -> int:
        return self.settings.elasticsearch_transport_port

    @property
    def ports(self) -> list[int]:
        return [self.port, self.transport_port]

    @property
    def heap(self) -> str:
        return self.settings.elasticsearch_heap

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.secure else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def run_as(self) -> str | None:
        return UNPRIVILEGED_USER

    @property
    def relocated(self) -> bool:
        return self.base_dir != self.home.resolve()

    @property
    def dist_dir(self) -> Path:
        return self.base_dir / "dist" / f"elasticsearch-{self.version}"

    @property
    def config_dir(self) -> Path:
        return self.base_dir / "config"

    @property
    def logs_dir(self) -> Path:
        return self.base_dir / "logs"

    @property
    def tmp_dir(self) -> Path:
        return self.base_dir / "tmp"

    def server_dir(self) -> Path:
        """Where the server's own files live: the state dir, unless its user cannot reach it."""
        home = self.home.resolve()
        if os.geteuid() != 0 or reachable_by(home.parent, UNPRIVILEGED_USER) is not False:
            return home
        digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
        return RELOCATED_ROOT / f"elasticsearch-{digest}"

    def prepare(self, java: Path) -> None:
        if os.geteuid() == 0:
            self.check_user()
            make_dirs(self.home.resolve(), mode=0o755)
            if self.relocated:
                make_dirs(RELOCATED_ROOT, mode=0o755)
                self.make_relocated_dir()
        for directory in (self.data_dir, self.logs_dir, self.tmp_dir, self.config_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.unpack()
        self.write_config()
        if self.relocated:
            chown_tree(self.base_dir, UNPRIVILEGED_USER)  # base chowns only self.home

    def check_user(self) -> None:
        reachable = reachable_by(self.base_dir.parent, UNPRIVILEGED_USER)
        if reachable is None:
            raise StackError(
                f"Elasticsearch refuses to run as root and the stack runs it as "
                f"{UNPRIVILEGED_USER!r}, which does not exist here. Create that user or start "
                "the stack as an ordinary user."
            )
        if not reachable:
            raise StackError(
                f"Elasticsearch runs as {UNPRIVILEGED_USER!r} when started as root, and that user "
                f"cannot reach {self.base_dir}. Set RECOMMENDER_STACK__STATE_DIR to a directory "
                "whose parents are world-traversable (chmod o+x), e.g. /var/lib/recommender."
            )

    def make_relocated_dir(self) -> None:
        """``/var/lib/recommender`` must be root's alone: the server user owns what is below."""
        st = RELOCATED_ROOT.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise StackError(
                f"{RELOCATED_ROOT} must be a directory owned by root and writable only by it "
                "(it holds Elasticsearch's files when the stack runs as root). Fix it or set "
                "RECOMMENDER_STACK__STATE_DIR to a world-traversable directory."
            )
        self.base_dir.mkdir(mode=0o700, exist_ok=True)
        if self.base_dir.is_symlink() or not self.base_dir.is_dir():
            raise StackError(f"{self.base_dir} must be a plain directory")
        owner = self.home.resolve()
        (self.base_dir / "STATE_DIR").write_text(
            f"Elasticsearch files of the recommender stack whose state dir is {owner.parent}\n"
        )
        (self.home / "server-dir").write_text(f"{self.base_dir}\n")

    def unpack(self) -> None:
        """Unzip the distribution once per version, atomically, and drop other versions."""
        if not (self.dist_dir / "bin" / "elasticsearch").exists():
            archives = [p for p in maven_classpath("elasticsearch", self.settings.cache_dir)
                        if p.suffix == ".zip"]
            if not archives:
                raise StackError("stack/elasticsearch/pom.xml resolved no distribution zip")
            staging = self.dist_dir.with_name(f".{self.dist_dir.name}.partial")
            shutil.rmtree(staging, ignore_errors=True)
            with zipfile.ZipFile(archives[0]) as archive:
                for info in archive.infolist():
                    target = Path(archive.extract(info, staging))
                    mode = (info.external_attr >> 16) & 0o777  # zipfile drops the exec bits
                    if mode:
                        target.chmod(mode)
            unpacked = [p for p in staging.iterdir() if (p / "bin" / "elasticsearch").exists()]
            if len(unpacked) != 1:
                raise StackError(f"{archives[0]} is not an Elasticsearch distribution")
            unpacked[0].rename(self.dist_dir)
            shutil.rmtree(staging)
        for other in self.dist_dir.parent.iterdir():
            if other != self.dist_dir:
                shutil.rmtree(other)

    def write_config(self) -> None:
        """The distribution's config files, then ours over them; rewritten at every start."""
        shutil.copytree(self.dist_dir / "config", self.config_dir, dirs_exist_ok=True)
        (self.config_dir / "elasticsearch.yml").write_text(render(
            "elasticsearch-node.yml", self.security_template, port=self.port,
            transport_port=self.transport_port, data_dir=json.dumps(str(self.data_dir)),
            logs_dir=json.dumps(str(self.logs_dir)), host=self.host, node=self.node,
            discovery=self.discovery()))
        (self.config_dir / "log4j2.properties").write_text(
            render("elasticsearch-log4j2.properties"))

    def discovery(self) -> str:
        """A lone node is a single-node cluster; a cluster's nodes find each other through
        their transport addresses and elect a master among all of them the first time."""
        if self.settings.nodes == 1:
            return "discovery.type: single-node"
        seeds = [f"{host}:{self.transport_port}" for host in self.peers]
        names = [f"recommender-{n}" for n in range(1, self.settings.nodes + 1)]
        return (f"discovery.seed_hosts: {json.dumps(seeds)}\n"
                f"cluster.initial_master_nodes: {json.dumps(names)}")

    def command(self, java: Path) -> tuple[list[str], dict[str, str]]:
        heap = self.heap
        env = {
            "ES_JAVA_HOME": str(java.resolve().parents[1]),
            "ES_JAVA_OPTS": f"-Xms{heap} -Xmx{heap} -XX:-AlwaysPreTouch",
            "ES_PATH_CONF": str(self.config_dir),
            "ES_TMPDIR": str(self.tmp_dir),
        }
        return [str(self.dist_dir / "bin" / "elasticsearch")], env

    def client(self) -> Elasticsearch:
        from recommender.clients import elasticsearch_client
        from recommender.stack.connect import admin_settings

        es = admin_settings(self.settings).elasticsearch.model_copy(update={"url": self.url})
        return elasticsearch_client(es, request_timeout=3, max_retries=0)

    def ready(self) -> bool:
        """This node answers for a cluster with an elected master (local health)."""
        es = self.client()
        try:
            return es.cluster.health(local=True)["status"] in ("yellow", "green")
        finally:
            es.close()

    def elected_master(self) -> int | None:
        """The node number of the cluster's elected master, as this node sees it."""
        es = self.client()
        try:
            name = es.cat.master(format="json")[0]["node"]
        finally:
            es.close()
        return int(name.rsplit("-", 1)[1]) if name.startswith("recommender-") else None

    def server_version(self) -> str:
        """From the node itself: this distribution has no ``GET /`` (the rest-root module)."""
        es = self.client()
        try:
            nodes = es.nodes.info(node_id="_local", metric="_none")["nodes"]
            return next(iter(nodes.values()))["version"]
        except Exception:  # noqa: BLE001 - went down between ready() and now
            return self.version
        finally:
            es.close()


class SecureElasticsearchService(ElasticsearchService):
    """Security on: HTTPS with the stack CA's certificate, and file-realm users (one per
    component plus admin) with the roles of ``recommender.stack.access``. Users, hashes and
    roles are files in the server's config directory, rewritten at every start, so a new
    component or a changed role needs only a restart."""

    security_template = "elasticsearch-security.yml"

    def write_config(self) -> None:
        from recommender.stack import access
        from recommender.stack.secrets import StackSecrets, es_password_hash

        super().write_config()
        secrets = StackSecrets.of(self.settings)
        certs = self.config_dir / "certs"
        certs.mkdir(exist_ok=True)
        for source, name in ((secrets.ca_cert, "ca.crt"), (secrets.node_cert, "node.crt"),
                             (secrets.node_key, "node.key")):
            write_private(certs / name, source.read_text())
        users = "".join(f"{account}:{es_password_hash(secrets.password(account))}\n"
                        for account in access.ACCOUNTS)
        write_private(self.config_dir / "users", users)
        write_private(self.config_dir / "users_roles", "".join(
            f"{role}:{','.join(names)}\n" for role, names in access.es_user_roles().items()))
        # One line per role, its descriptor in YAML's JSON-compatible flow style: the file
        # realm splits roles.yml at unindented lines, one role each.
        roles = access.es_roles().items()
        write_private(self.config_dir / "roles.yml",
                      "".join(f"{role}: {json.dumps(descriptor)}\n" for role, descriptor in roles))


def reachable_by(path: Path, user: str) -> bool | None:
    """Can ``user`` traverse every existing directory down to ``path`` (mode bits, not ACLs)?

    Directories that do not exist yet count as reachable: the stack creates them 0755.
    None when the user does not exist.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    groups = set(os.getgrouplist(user, entry.pw_gid))
    for directory in [*reversed(path.parents), path]:
        try:
            st = directory.stat()
        except FileNotFoundError:
            return True
        if st.st_uid == entry.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def make_dirs(path: Path, mode: int) -> None:
    """``mkdir -p`` whose new directories get ``mode`` whatever the umask."""
    for directory in [*reversed(path.parents), path]:
        if not directory.exists():
            directory.mkdir(exist_ok=True)
            directory.chmod(mode)


def chown_tree(path: Path, user: str) -> None:
    """Give ``path`` and everything below to ``user``, never following symlinks."""
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
