"""Users' ratings as the API serves them: read from Cassandra once per user, then kept
current from the ratings topic, so a request needs no Cassandra read and a new rating counts
as soon as Kafka has it.

Why both sources: Cassandra holds everything ingested; the topic holds what just happened,
ahead of Cassandra by the ingest's trigger and batch time. A user read from Cassandra while
their newest rating is still on its way there would miss it for good, so every event of the
last ``api.history_recent_s`` seconds is kept aside and laid over each Cassandra read, and
the follower starts that far back in the topic. Ratings of a user already held are applied
as they arrive, in the topic's order (one partition per user: the key is the user id), as
Cassandra's last write wins.

Only events that ingest would store count (``usable``): a dead-lettered event never changes
what the API serves. A follower that stops (Kafka unreachable, no read right in secure mode)
turns the cache off: every request then reads Cassandra again, as before the cache.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import orjson

from recommender.contracts import MAX_EVENT_ID_CHARS, RATING_MAX, RATING_MIN
from recommender.serve.schemas import INT32_MAX
from recommender.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.2
BATCH = 5_000
Ratings = dict[int, float]  # movie id -> rating; never changed once handed out


def usable(value: bytes | None) -> tuple[int, int, float] | None:
    """``(user, movie, rating)`` of a rating event that ingest would store, else ``None``
    (tags, and everything ingest dead-letters)."""
    try:
        event = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("event_type", "rating") not in (None, "rating"):
        return None
    user, movie, rating = event.get("user_id"), event.get("movie_id"), event.get("rating")
    ids_ok = all(type(v) is int and 0 < v <= INT32_MAX for v in (user, movie))
    ids_short = all(len(str(event.get(f) or "")) <= MAX_EVENT_ID_CHARS
                    for f in ("event_id", "source"))
    timed = type(event.get("event_time")) is int
    if not (ids_ok and ids_short and timed and isinstance(rating, int | float)
            and not isinstance(rating, bool) and RATING_MIN <= rating <= RATING_MAX):
        return None
    return user, movie, float(rating)


class Histories:
    """Per-user ratings, least recently asked evicted beyond ``max_users``. Thread-safe;
    a user's ratings are replaced, never changed in place, so a caller may keep them.

    The recent events are kept per user (laid over a Cassandra read in one step) and in
    arrival order (to expire them); at most ``max_recent`` of them, so a bulk load cannot
    fill the memory: during one, a user first asked for while ingest lags further behind
    than the kept events reach may miss ratings until evicted or the next promotion."""

    def __init__(self, read: Callable[[int], Ratings], max_users: int, recent_s: float,
                 max_recent: int = 200_000, clock: Callable[[], float] = time.monotonic,
                 ) -> None:
        self.read, self.max_users, self.recent_s, self.clock = read, max_users, recent_s, clock
        self.max_recent = max_recent
        self.live = False  # True while a follower keeps the held users current
        self._lock = threading.Lock()
        self._users: OrderedDict[int, Ratings] = OrderedDict()
        self._recent: deque[tuple[float, int]] = deque()  # (arrived, user), oldest first
        self._recent_of: dict[int, deque[tuple[int, float]]] = {}  # user -> (movie, rating)

    def get(self, user_id: int) -> Ratings:
        """The user's ratings: held ones while following, else Cassandra's with the recent
        events laid over them (held from then on)."""
        if not self.live:
            return self.read(user_id)
        if (held := self.held(user_id)) is not None:
            return held
        stored = self.read(user_id)  # outside the lock: a Cassandra round trip
        with self._lock:
            if user_id in self._users:  # an event or another reader came first
                return self._users[user_id]
            ratings = {**stored, **dict(self._recent_of.get(user_id, ()))}
            self._users[user_id] = ratings
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
            return ratings

    def held(self, user_id: int) -> Ratings | None:
        """The user's ratings if they are held and kept current, without reading Cassandra
        (``None`` otherwise): what the API may use without leaving the event loop."""
        if not self.live:
            return None
        with self._lock:
            held = self._users.get(user_id)
            if held is not None:
                self._users.move_to_end(user_id)
            return held

    def apply(self, events: list[tuple[int, int, float]]) -> None:
        """Ratings just read from the topic, in its order."""
        now = self.clock()
        with self._lock:
            for user, movie, rating in events:
                self._recent.append((now, user))
                self._recent_of.setdefault(user, deque()).append((movie, rating))
                held = self._users.get(user)
                if held is not None and held.get(movie) != rating:
                    self._users[user] = {**held, movie: rating}
            while self._recent and (now - self._recent[0][0] > self.recent_s
                                    or len(self._recent) > self.max_recent):
                self._expire_oldest()

    def _expire_oldest(self) -> None:
        _, user = self._recent.popleft()
        of_user = self._recent_of[user]
        of_user.popleft()  # the user's oldest is the oldest overall's: both in arrival order
        if not of_user:
            del self._recent_of[user]

    def stop_following(self) -> None:
        """Nothing keeps the held users current any more: forget them, read Cassandra."""
        with self._lock:
            self.live = False
            self._users.clear()
            self._recent.clear()
            self._recent_of.clear()


class Follower:
    """A thread that reads the ratings topic from ``recent_s`` seconds back and applies each
    usable rating to ``histories``; stops on ``close`` or on a Kafka error."""

    def __init__(self, settings: Settings, histories: Histories) -> None:
        self.settings, self.histories = settings, histories
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ratings-follower",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        consumer = self._assigned_when_possible()
        if consumer is None:
            return
        self.histories.live = True
        try:
            while not self._stop.is_set():
                self._poll(consumer)
        except Exception as exc:  # noqa: BLE001 - stop following rather than serve stale
            log.warning("stopped following %s (%s): every request reads Cassandra",
                        self.settings.kafka.ratings_topic, exc)
        finally:
            self.histories.stop_following()
            consumer.close()

    def _assigned_when_possible(self) -> Any:
        """``_assigned``, retried (the topic may not exist yet, or Kafka not answer) until
        it works or the follower is closed; meanwhile the API reads Cassandra."""
        wait_s = 1.0
        while not self._stop.is_set():
            try:
                return self._assigned()
            except Exception as exc:  # noqa: BLE001 - retried; the API reads Cassandra
                if wait_s == 1.0:
                    log.warning("not following %s yet (%s): every request reads Cassandra "
                                "until it can", self.settings.kafka.ratings_topic, exc)
            self._stop.wait(wait_s)
            wait_s = min(wait_s * 2, 30.0)
        return None

    def _assigned(self) -> Any:
        """A consumer on every partition of the topic, at the first offset of ``recent_s``
        seconds ago (the end where nothing is that recent)."""
        from confluent_kafka import OFFSET_END, TopicPartition

        from recommender.clients import kafka_follower

        topic = self.settings.kafka.ratings_topic
        consumer = kafka_follower(self.settings.kafka)
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            if not partitions:
                raise LookupError(f"topic {topic!r} has no partitions")
            since_ms = int((time.time() - self.histories.recent_s) * 1000)
            starts = consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in partitions], timeout=10)
            consumer.assign([TopicPartition(topic, s.partition,
                                            s.offset if s.offset >= 0 else OFFSET_END)
                             for s in starts])
        except Exception:
            consumer.close()
            raise
        return consumer

    def _poll(self, consumer: Any) -> None:
        """Apply the next messages. An error that retrying cannot mend (no read right, the
        topic gone, a fatal client error) stops the follower; a broker away is retried by
        the client itself, and the held users wait for it."""
        from confluent_kafka import KafkaError

        events = []
        for message in consumer.consume(num_messages=BATCH, timeout=POLL_S):
            error = message.error()
            if error is None:
                if (event := usable(message.value())) is not None:
                    events.append(event)
            elif error.fatal() or error.code() in (
                    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.UNKNOWN_TOPIC_OR_PART,
                    KafkaError._UNKNOWN_PARTITION):
                raise RuntimeError(str(error))
        if events:
            self.histories.apply(events)
