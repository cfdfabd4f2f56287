"""The HTTP API (``recommender serve``): FastAPI routes over Elasticsearch, Cassandra, Kafka
and the model registry. ``main.create_app`` builds an app from settings; nothing here starts
a server or opens a connection at import time."""
