"""The embedded single-node stack (Kafka, Cassandra, Elasticsearch); see ``manager``."""
