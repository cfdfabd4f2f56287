"""Steady load with a ledger: what was sent and what Kafka acknowledged, so a test can say
afterwards that every acknowledged rating and request made it through, exactly once.

* ``RatingsLoad``: synthetic ratings replayed at a fixed rate by the project's own
  ``replay``; when Kafka stops acknowledging (a broker outage) it resumes from the progress
  file, as an operator reruns ``recommender load ratings``. The ledger is the acknowledged
  prefix of the deterministic stream.
* ``RequestsLoad``: pair prediction requests at a fixed rate; the ledger holds the request
  ids whose send Kafka acknowledged (the producer retries through a short outage; a send it
  gives up on is what a website would have seen as an error, so it is not in the ledger).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson

from data_loading.replay import ProgressFile, progress_path, replay
from data_loading.synthetic import Catalogue, generate
from recommender.clients import kafka_producer
from recommender.errors import BackendUnavailable
from recommender.settings import Settings

if TYPE_CHECKING:
    from data_loading.datasets import Dataset
    from recommender.contracts import RatingEvent

log = logging.getLogger(__name__)
SEED = 11


class Load(threading.Thread):
    """A daemon thread that sends until ``stop()``, then finishes its last flush."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def stop(self, timeout_s: float = 300) -> None:
        self.halt.set()
        self.join(timeout_s)
        assert not self.is_alive(), f"{self.name} did not finish within {timeout_s:.0f} s"
        if self.error is not None:
            raise AssertionError(f"{self.name} failed") from self.error


class RatingsLoad(Load):
    def __init__(self, settings: Settings, dataset: Dataset, *, rate: float, first_user: int,
                 source: str) -> None:
        super().__init__(f"ratings-{source}")
        self.settings, self.rate = settings, rate
        self.first_user, self.source = first_user, source
        self.catalogue = Catalogue.from_dataset(dataset)
        self.progress = ProgressFile(progress_path(settings, settings.kafka.ratings_topic,
                                                   source))
        self.interruptions = 0

    def stream(self) -> Iterator[RatingEvent]:
        """The deterministic synthetic stream: the same events in the same order every time."""
        return generate(self.catalogue, users=10_000_000, seed=SEED,
                        first_user=self.first_user, source=self.source)

    def until_stopped(self) -> Iterator[RatingEvent]:
        for event in self.stream():
            if self.halt.is_set():
                return
            yield event

    def run(self) -> None:
        resume = False
        while True:
            try:
                replay(self.settings, self.until_stopped(), source=self.source, rate=self.rate,
                       resume=resume)
                return
            except BackendUnavailable as exc:  # Kafka down: rerun, resuming from the ledger
                self.interruptions += 1
                resume = True
                log.warning("replay interrupted (%s); resuming", exc)
                self.halt.wait(2)
            except BaseException as exc:  # noqa: BLE001 - reported by stop()
                self.error = exc
                return

    def acked(self) -> int:
        """Events Kafka has acknowledged so far (the replay's progress file)."""
        return self.progress.load()[0]

    def ledger(self) -> list[str]:
        """Event ids of every acknowledged event."""
        return [event.event_id for event in islice(self.stream(), self.acked())]

    def close(self) -> None:
        self.progress.path.unlink(missing_ok=True)


class RequestsLoad(Load):
    def __init__(self, settings: Settings, *, rate: float, users: list[int], movies: list[int],
                 prefix: str) -> None:
        super().__init__(f"requests-{prefix}")
        self.settings, self.rate, self.prefix = settings, rate, prefix
        self.users, self.movies = users, movies
        self.sent = 0
        self.acked: set[str] = set()
        self.failed: list[str] = []

    def request(self, n: int) -> dict[str, Any]:
        return {"request_id": f"{self.prefix}-{n}", "user_id": self.users[n % len(self.users)],
                "movie_id": self.movies[(n * 7) % len(self.movies)],
                "requested_at": int(time.time() * 1000)}

    def run(self) -> None:
        producer = kafka_producer(self.settings.kafka)
        topic = self.settings.kafka.requests_topic
        started = time.monotonic()
        try:
            while not self.halt.is_set():
                due = int((time.monotonic() - started) * self.rate)
                while self.sent < due and not self.halt.is_set():
                    body = self.request(self.sent)
                    future = producer.send(topic, key=str(body["user_id"]).encode(),
                                           value=orjson.dumps(body))
                    rid = body["request_id"]
                    future.add_callback(lambda _meta, rid=rid: self.acked.add(rid))
                    future.add_errback(lambda _exc, rid=rid: self.failed.append(rid))
                    self.sent += 1
                self.halt.wait(0.05)
            producer.flush(timeout=180)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
        finally:
            producer.close(timeout=10)
