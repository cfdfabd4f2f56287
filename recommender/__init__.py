"""A real-time movie recommendation pipeline: Kafka, Spark, Cassandra and Elasticsearch."""

__version__ = "0.1.0"
