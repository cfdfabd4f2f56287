"""docker-compose.yml is the Docker deployment; it must match the embedded stack."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from recommender.runtime import pinned_version
from recommender.settings import StackSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def image_tag(service: str) -> str:
    return COMPOSE["services"][service]["image"].rsplit(":", 1)[1]


def test_services_have_health_checks_and_named_volumes():
    services = COMPOSE["services"]
    assert set(services) >= {"kafka", "cassandra", "elasticsearch", "logstash", "kibana"}
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith("./") or source in COMPOSE["volumes"], (name, volume)


def test_versions_match_the_embedded_stack():
    assert image_tag("kafka") == pinned_version("kafka", "kafka_2.13")
    assert image_tag("cassandra") == pinned_version("cassandra", "cassandra-all")
    es = pinned_version("elasticsearch", "elasticsearch")
    assert image_tag("elasticsearch") == image_tag("logstash") == image_tag("kibana") == es


def test_client_ports_match_the_embedded_defaults():
    stack = StackSettings()
    published = {name: [int(p.split(":")[0]) for p in s.get("ports", [])]
                 for name, s in COMPOSE["services"].items()}
    assert published["kafka"] == [stack.kafka_port]
    assert published["cassandra"] == [stack.cassandra_port]
    assert published["elasticsearch"] == [stack.elasticsearch_port]
    assert published["kibana"] == [5601]


def test_logstash_mounts_exist():
    for volume in COMPOSE["services"]["logstash"]["volumes"]:
        source = volume.split(":", 1)[0]
        if source.startswith("./"):
            assert (REPO / source).exists(), f"logstash mounts missing {source}"
    pipelines = yaml.safe_load((REPO / "logstash/config/pipelines.yml").read_text())
    for pipeline in pipelines:
        conf = pipeline["path.config"].replace("/usr/share/logstash/pipeline", "logstash/pipeline")
        assert (REPO / conf).exists(), conf


def test_logstash_writes_to_every_elasticsearch_node_it_is_given():
    """Each elasticsearch output takes its hosts from ELASTICSEARCH_HOSTS as a bare string:
    Logstash splits a list of URIs from one variable on whitespace, where an array around
    the variable would make the whole list one (invalid) host."""
    conf = (REPO / "logstash/pipeline/predictions.conf").read_text()
    hosts = re.findall(r"^\s*hosts\s*=>\s*(.+?)\s*$", conf, re.MULTILINE)
    assert len(hosts) == conf.count("elasticsearch {")
    assert set(hosts) == {'"${ELASTICSEARCH_HOSTS:http://elasticsearch:9200}"'}
    environment = COMPOSE["services"]["logstash"]["environment"]
    assert environment["ELASTICSEARCH_HOSTS"].split() == ["http://elasticsearch:9200"]
