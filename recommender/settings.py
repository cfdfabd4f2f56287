"""One typed settings object for every endpoint, name and knob the pipeline uses.

Defaults live here, in code, and point at the embedded single-node stack. A deployment
overrides only what differs, from environment variables or a TOML file, so the same code
runs against the embedded stack, docker-compose or a production cluster.

Precedence (highest first): environment variables, the TOML file, defaults.

Environment variables are ``RECOMMENDER_<SECTION>__<FIELD>``, e.g.::

    RECOMMENDER_KAFKA__BOOTSTRAP_SERVERS=broker1:9092,broker2:9092
    RECOMMENDER_SPARK__MASTER=spark://spark-master:7077
    RECOMMENDER_CASSANDRA__CONTACT_POINTS='["cass1","cass2"]'

The TOML file is ``$RECOMMENDER_CONFIG`` or ``./recommender.toml`` when it exists; its
tables are the section names (``[kafka]``, ``[spark]`` ...). ``docs/recommender.example.toml``
is the fully commented reference.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from recommender.contracts import IndexNames

XDG_FALLBACKS = {"XDG_CACHE_HOME": ".cache", "XDG_DATA_HOME": ".local/share",
                 "XDG_STATE_HOME": ".local/state"}


def _xdg(var: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / XDG_FALLBACKS[var]) / "recommender"


def _as_documented(path: Path) -> str:
    """A default path as the reference config shows it to every reader: under ``~`` and the
    XDG fallbacks, whatever ``XDG_*_HOME`` the process that writes the file has set."""
    shown = str(path)
    for var, fallback in XDG_FALLBACKS.items():
        if os.environ.get(var):
            shown = shown.replace(os.environ[var].rstrip("/"), f"~/{fallback}", 1)
    return shown.replace(str(Path.home()), "~", 1)


SECRET_FILE_SUFFIX = "_file"


def read_secret_file(path: Path, field: str) -> SecretStr:
    """The secret in ``path`` (surrounding whitespace dropped). Secrets live in files so that
    they never sit in the repository, a shell history or a process listing."""
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{field}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"{field}: {path} is empty")
    return SecretStr(value)


class SecretFiles(BaseModel):
    """A section whose secret ``X`` may instead be given as ``X_file``, a path to read it
    from. An explicit value wins over the file."""

    @model_validator(mode="after")
    def _load_secret_files(self) -> SecretFiles:
        for name in type(self).model_fields:
            path = getattr(self, name + SECRET_FILE_SUFFIX, None)
            if path is not None and getattr(self, name) is None:
                setattr(self, name, read_secret_file(Path(path), name + SECRET_FILE_SUFFIX))
        return self


class KafkaSettings(SecretFiles):
    """Kafka endpoints, security and the topics that are the pipeline's contracts."""

    bootstrap_servers: str = "localhost:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = Field(
        None, description="File holding sasl_password (read at start; never logged).")
    ssl_cafile: str | None = Field(None, description="PEM file of the CA that signed the "
                                   "brokers' certificates (SSL, SASL_SSL).")
    ratings_topic: str = "ratings"
    ratings_dlq_topic: str = "ratings-dlq"
    requests_topic: str = "prediction-requests"
    requests_dlq_topic: str = "prediction-requests-dlq"
    predictions_topic: str = "predictions"
    predictions_dlq_topic: str = "predictions-dlq"
    predictor_group: str = Field(
        "recommender-predictor", description="Consumer group the predictor commits to.")
    shipper_group: str = "recommender-shipper"
    num_partitions: int = Field(4, ge=1, description="Partitions of topics the project creates.")
    connect_wait_s: float = Field(300.0, ge=0, description=(
        "How long the shipper waits, retrying with backoff, for a broker (at start, or to "
        "commit during a broker restart)."))
    replication_factor: int = Field(1, ge=1, description="replication.factor of topics the "
                                    "project creates; 3 on a three-broker cluster.")
    min_insync_replicas: int | None = Field(
        None, ge=1, description="min.insync.replicas of topics the project creates (unset: the "
        "broker's default); with acks=all, 2 of 3 replicas survive one broker's loss.")

    @model_validator(mode="after")
    def _distinct_groups(self) -> KafkaSettings:
        # the predictor commits offsets to an idle group; Kafka refuses commits to a group
        # whose members (shippers) are active, so sharing one would stall its lag figures
        if self.predictor_group == self.shipper_group:
            raise ValueError("kafka.predictor_group and kafka.shipper_group must differ, got "
                             f"{self.predictor_group!r} for both")
        return self


class CassandraSettings(SecretFiles):
    """Cassandra contact points, auth and the keyspace that is the system of record."""

    contact_points: list[str] = ["127.0.0.1"]
    port: int = 9042
    local_dc: str = "datacenter1"
    keyspace: str = "movielens"
    request_timeout_s: float = 30.0
    connect_wait_s: float = Field(300.0, ge=0, description=(
        "How long a starting job waits, retrying with backoff, for a Cassandra node."))
    replication_factor: int = Field(1, ge=1, description="Replication factor of the keyspace "
                                    "(SimpleStrategy) when the project creates it.")
    consistency_level: Literal["ONE", "LOCAL_ONE", "QUORUM", "LOCAL_QUORUM", "ALL"] = Field(
        "LOCAL_QUORUM", description="Of every read and write, by the Python driver and the "
        "Spark connector alike. A quorum of replication factor 1 is that one replica, so the "
        "default is also the single-node behaviour.")
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(None, description="File holding password.")


class ElasticsearchSettings(SecretFiles):
    """Elasticsearch endpoint and auth; the index names are the BI and API contracts, all
    under ``index_prefix``."""

    url: str = Field("http://localhost:9200", description="One node's URL, or several "
                     "separated by commas: the client fails over between them.")
    index_prefix: str = Field("", pattern=r"^[a-z0-9_.-]*$", description="Prepended to "
                              "every index, alias and template name (as Jaeger's "
                              "es.index-prefix): deployments sharing a cluster stay apart.")
    api_key: SecretStr | None = None
    api_key_file: Path | None = Field(None, description="File holding api_key.")
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(None, description="File holding password.")
    ca_certs: str | None = Field(None, description="PEM file of the CA of an https url.")
    verify_certs: bool = True
    request_timeout: float = 30.0
    number_of_replicas: int = Field(0, ge=0, description="Replicas of every index the project "
                                    "creates; 1 on a cluster, so a node's loss loses no shard.")

    @property
    def urls(self) -> list[str]:
        """The node URLs of ``url``."""
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def indices(self) -> IndexNames:
        return IndexNames.under(self.index_prefix)


class SparkSettings(BaseModel):
    """SparkSession options; ``master`` takes any Spark master URL (local, spark://, yarn, k8s://)."""

    master: str = "local[*]"
    app_name: str = "recommender"
    driver_memory: str = "2g"
    executor_memory: str = "2g"
    sql_shuffle_partitions: int = Field(4, ge=1)
    checkpoint_dir: Path = _xdg("XDG_STATE_HOME") / "checkpoints"
    max_offsets_per_trigger: int = Field(
        20000, ge=1, description="maxOffsetsPerTrigger of the predictor: a backlog of "
        "requests is answered in batches this size, so it bounds their latency.")
    ingest_max_offsets_per_trigger: int = Field(
        500000, ge=1, description="maxOffsetsPerTrigger of the ingest job. Each batch pays a "
        "fixed cost (planning, job start-up), so bigger batches "
        "drain a backlog of ratings faster; live traffic stays far below it.")
    trigger_interval: str = Field(
        "1 second", description="Micro-batch trigger (processingTime) of ingest and predict: a "
        "request waits up to one interval before its batch starts, so it bounds latency; each "
        "batch also pays a fixed cost, so shorter intervals cost CPU.")
    python: str | None = Field(
        None, description="Python of the executors (spark.pyspark.python); default: this one. "
        "On a cluster, point it at an environment that has this package installed.")
    cores_max: int | None = Field(
        None, ge=1, description="spark.cores.max: the cores one job takes on a standalone "
        "cluster. Streaming jobs never finish, so without it the first takes every core.")
    executor_cores: int | None = Field(None, ge=1, description="spark.executor.cores.")
    driver_host: str | None = Field(
        None, description="spark.driver.host and spark.driver.bindAddress: the address "
        "executors reach the driver at (unset: the one Spark derives from the hostname).")
    extra_conf: dict[str, str] = {}


# What a node of the embedded cluster gets when the heap is not set explicitly: three of each
# server, a Spark master and two workers fit in 16 GiB beside the pipeline.
CLUSTER_HEAPS = {"kafka_heap": "384m", "cassandra_heap": "768M", "elasticsearch_heap": "512m"}


class StackSettings(BaseModel):
    """The embedded stack: single-node by default, or a local cluster (``nodes``); jar cache,
    data, ports and explicit heap sizes."""

    nodes: int = Field(1, ge=1, le=9, description="Nodes of each server. 1: the embedded "
                       "single-node stack. 3: three Kafka, Cassandra and Elasticsearch nodes on "
                       "127.0.0.1-3 and a Spark standalone master with spark_workers workers, "
                       "in cluster_state_dir on ports + cluster_port_offset.")

    secure: bool = Field(
        False, description="Run (and address) the secure stack: Kafka SASL/TLS, Cassandra "
        "and Elasticsearch authentication, in secure_state_dir on ports + secure_port_offset.")
    state_dir: Path = _xdg("XDG_STATE_HOME") / "stack"
    secure_state_dir: Path = _xdg("XDG_STATE_HOME") / "stack-secure"
    secure_port_offset: int = Field(
        10000, ge=0, description="Added to every port by the secure stack, so it never takes "
        "(or is mistaken for) the plain one.")
    cluster_state_dir: Path = _xdg("XDG_STATE_HOME") / "stack-cluster"
    cluster_port_offset: int = Field(
        1000, ge=0, description="Added to every port by the cluster (nodes > 1), so it runs "
        "beside the single-node stack.")
    cache_dir: Path = _xdg("XDG_CACHE_HOME")
    java_home: Path | None = None
    kafka_heap: str = "512m"
    cassandra_heap: str = "1G"
    elasticsearch_heap: str = "1g"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    cassandra_port: int = 9042
    cassandra_storage_port: int = 7000
    cassandra_jmx_port: int = 7199
    elasticsearch_port: int = 9200
    elasticsearch_transport_port: int = 9300
    spark_workers: int = Field(2, ge=1, description="Spark standalone workers of the cluster.")
    spark_worker_cores: int = Field(4, ge=1, description="Cores each worker offers (SPARK_WORKER_"
                                    "CORES); more than the machine has, so that every job gets "
                                    "some while the streaming jobs hold theirs.")
    spark_worker_memory: str = Field("4g", description="Memory each worker offers to executors.")
    spark_daemon_heap: str = Field("256m", description="Heap of the Spark master and workers.")
    spark_master_port: int = 7077
    startup_timeout_s: float = 180.0

    @model_validator(mode="after")
    def _one_mode(self) -> StackSettings:
        if self.secure and self.nodes > 1:
            raise ValueError("stack.secure and stack.nodes > 1 do not combine: the secure "
                             "stack is single-node")
        return self

    def active(self) -> StackSettings:
        """The settings of the stack this mode runs: the secure stack and the cluster each
        have their own state directory and ports, so neither can be confused with the plain
        single-node stack. Idempotent: the copy carries the offset already applied (and 0
        left to add)."""
        if self.secure:
            return self._moved(self.secure_state_dir, self.secure_port_offset,
                               secure_port_offset=0)
        if self.nodes > 1:
            heaps = {k: v for k, v in CLUSTER_HEAPS.items() if k not in self.model_fields_set}
            return self._moved(self.cluster_state_dir, self.cluster_port_offset,
                               cluster_port_offset=0, **heaps)
        return self

    def _moved(self, state_dir: Path, offset: int, **update: object) -> StackSettings:
        ports = {name: value + offset for name, value in self if name.endswith("_port")}
        return self.model_copy(update={"state_dir": state_dir, **ports, **update})


class RankingSettings(BaseModel):
    """The ranking model: implicit ALS (Hu, Koren, Volinsky 2008), Spark ML's names.

    Defaults chosen by ``bench/tune.py`` on validation splits carved from training data
    (``bench/results/tune.json``, ``docs/evaluation.md``)."""

    rank: int = Field(16, ge=1)
    reg_param: float = Field(0.1, ge=0, description="regParam (Spark scales it by the "
                             "user's or movie's rating count).")
    alpha: float = Field(0.5, ge=0, description="Confidence 1 + alpha x rating.")
    max_iter: int = Field(15, ge=1)
    rating_weight: float = Field(0.05, ge=0, description="Top-k lists are ordered by ranking "
                                 "score + rating_weight x the rating model's predicted "
                                 "rating (0: the ranking model alone).")


class RatingSettings(BaseModel):
    """The rating model: explicit ALS on the residuals of regularised biases."""

    rank: int = Field(32, ge=1)
    reg_param: float = Field(0.15, ge=0)
    max_iter: int = Field(15, ge=1)
    item_bias_reg: float = Field(5.0, ge=0, description="Pseudo-ratings shrinking a "
                                 "movie's bias toward 0.")
    user_bias_reg: float = Field(5.0, ge=0, description="Pseudo-ratings shrinking a user's "
                                 "bias (and offset on new movies) toward 0.")
    new_movie_max_ratings: int = Field(2, ge=1, description="Movies rated at most this often "
                                       "in training tell what to expect of a movie the model "
                                       "never saw.")


class ModelSettings(BaseModel):
    """Model registry on disk, the quality gate that guards promotion, and the
    hyper-parameters of the two models every version holds."""

    models_dir: Path = _xdg("XDG_DATA_HOME") / "models"
    retention: int = Field(5, ge=1, description="Versions kept on disk besides CURRENT.")
    gate_tolerance: float = Field(0.02, ge=0, description="Allowed relative drop of either "
                                  "model (ranking NDCG@10, rating RMSE) before refusal.")
    ranking: RankingSettings = RankingSettings()
    rating: RatingSettings = RatingSettings()
    seed: int = 42


class DataSettings(BaseModel):
    """Where MovieLens lives: a local directory, else the user cache (downloaded once)."""

    data_dir: Path | None = None
    dataset: str = "ml-latest-small"


class ApiSettings(SecretFiles):
    """HTTP API bind address and the key its write endpoints require (None: open)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: SecretStr | None = None
    api_key_file: Path | None = Field(None, description="File holding api_key.")
    cors_origins: list[str] = []
    max_k: int = Field(100, ge=1)
    in_process_max_movies: int = Field(
        1_000_000, ge=0, description="/recommendations scores every movie in the API process "
        "while the model has at most this many (exact, no round trip); larger catalogues "
        "go through Elasticsearch kNN over movie-vectors.")
    history_cache_users: int = Field(
        10_000, ge=0, description="Users whose ratings (and last answers) the API keeps in "
        "memory, current from the ratings topic, so /recommendations reads no Cassandra; 0 "
        "reads Cassandra on every request.")
    history_recent_s: float = Field(
        120.0, gt=0, description="How far back the API starts following the ratings topic, "
        "and how long it keeps each rating aside for users it reads from Cassandra later: "
        "longer than ingest lags behind the topic.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECOMMENDER_", env_nested_delimiter="__", extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    cassandra: CassandraSettings = CassandraSettings()
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    spark: SparkSettings = SparkSettings()
    stack: StackSettings = StackSettings()
    model: ModelSettings = ModelSettings()
    data: DataSettings = DataSettings()
    api: ApiSettings = ApiSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("RECOMMENDER_CONFIG", "recommender.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )


def as_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """``RECOMMENDER_*`` variables that give a child process exactly these settings (the
    launcher and rollover start jobs as separate processes). A secret read from a file is
    passed on as that file's path, never as its value."""
    import json

    env = dict(os.environ if base is None else base)
    for section, model in settings:
        for name, value in model:
            if value is None or getattr(model, name + SECRET_FILE_SUFFIX, None) is not None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, BaseModel):  # a nested table (model.ranking ...)
                value = value.model_dump_json()
            elif isinstance(value, list | dict):
                value = json.dumps(value)
            env[f"RECOMMENDER_{section.upper()}__{name.upper()}"] = str(value)
    return env


REFERENCE_HEADER = """\
# recommender reference configuration: every setting with its default.
# Copy to ./recommender.toml (or point $RECOMMENDER_CONFIG at it) and keep only what differs.
# Every value can also be set as RECOMMENDER_<SECTION>__<FIELD>, which wins over this file.
# Directory defaults follow $XDG_STATE_HOME, $XDG_CACHE_HOME and $XDG_DATA_HOME.
"""


def reference_toml() -> str:
    """``docs/recommender.example.toml``: every section and field with its default and
    description, written from the classes above so the reference can never go stale (a
    unit test compares the file with this)."""
    lines = [REFERENCE_HEADER.rstrip("\n")]
    for section, info in Settings.model_fields.items():
        lines += _toml_table(section, info.annotation)
    return "\n".join(lines) + "\n"


def _toml_table(name: str, model: type[BaseModel]) -> list[str]:
    doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
    lines, tables = ["", f"# {doc}", f"[{name}]"], []
    for field, info in model.model_fields.items():
        if isinstance(info.default, BaseModel):
            tables += _toml_table(f"{name}.{field}", type(info.default))
            continue
        if info.description:
            lines.append(f"# {info.description}")
        lines.append(_toml_line(field, info.default))
    return lines + tables


def _toml_line(field: str, value: object) -> str:
    import json

    if value is None:
        return f"# {field} ="
    if isinstance(value, Path):
        return f'# {field} = "{_as_documented(value)}"  (default; give an absolute path)'
    if isinstance(value, bool):
        return f"{field} = {str(value).lower()}"
    if isinstance(value, dict):
        return f"{field} = {{{', '.join(f'{k!r} = {json.dumps(v)}' for k, v in value.items())}}}"
    return f"{field} = {json.dumps(value)}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
