"""The serving path on a test's private topics: the streaming predictor answering requests
and the built-in shipper indexing the answers into Elasticsearch, stopped on exit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from recommender.predict.job import Predictor
from recommender.settings import Settings
from recommender.shipper import Shipper

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class ShipperThread:
    """A shipper running beside the test, stopped on exit."""

    def __init__(self, settings: Settings) -> None:
        self.stop = threading.Event()
        self.shipper = Shipper(settings)
        self.thread = threading.Thread(target=self.shipper.run, args=(self.stop.is_set,))

    def __enter__(self) -> Shipper:
        self.thread.start()
        return self.shipper

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)


@contextmanager
def serving(spark: SparkSession, settings: Settings) -> Iterator[Shipper]:
    """A predictor (in this process's SparkSession, following ``settings.model``'s CURRENT)
    and a shipper, both on ``settings``' topics; yields the shipper for its stats."""
    predictor = Predictor(spark, settings)
    query = predictor.start()
    try:
        with ShipperThread(settings) as shipper:
            yield shipper
    finally:
        query.stop()
        predictor.close()
