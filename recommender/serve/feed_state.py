"""Listening-session feeds: "play me the next movie" without repeats, state kept server-side.

A session starts on its first ``next`` call: the user's top ``TOP_N`` from the live
recommender (the same ranking as ``/users/{id}/recommendations``) and the movies the user
rated are remembered. Each call then applies the feed rule of ``recommender.feed`` (a random
unserved movie of that top list, then popular movies of the last served movie's genre, then
popular movies of any genre; 404 when nothing is left), the same code the A/B simulation
runs.

State lives in this process only (an ``OrderedDict`` with sliding expiry): a session expires
``ttl_s`` after its last call, the oldest sessions are evicted beyond ``max_sessions``, and a
restart forgets all sessions. Run one API process per session id (one worker, or sticky
routing on the session id) or sessions will repeat movies across processes.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from recommender.errors import InvalidRequest
from recommender.feed import TOP_N, FeedState, Scored, Source, next_movie
from recommender.serve.recommend import Recommender

SESSION_TTL_S = 30 * 60.0
MAX_SESSIONS = 10_000


@dataclass
class SessionState:
    user_id: int
    model_version: str
    feed: FeedState
    expires_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Pick:
    movie: Scored
    source: Source
    genre: str | None
    served: int
    model_version: str
    expires_in_s: float


class SessionStore:
    """Thread-safe TTL map of session id -> state, plus the feed that picks the next movie."""

    def __init__(self, recommender: Recommender, ttl_s: float = SESSION_TTL_S,
                 max_sessions: int = MAX_SESSIONS, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.recommender = recommender
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.rng = rng or random.Random()
        self.clock = clock
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def next(self, session_id: str, user_id: int) -> Pick:
        """Serve the next movie of ``session_id`` (starting the session if it is new)."""
        state = self._get(session_id)
        if state is None:
            state = self._start(session_id, user_id)
        elif state.user_id != user_id:
            raise InvalidRequest(f"session {session_id!r} belongs to user {state.user_id}; "
                                 "start a new session id for this user")
        with state.lock:
            movie, source = next_movie(state.feed, self.rng, self._popular)
            state.expires_at = self.clock() + self.ttl_s
            return Pick(movie, source, state.feed.genre if source != "top" else None,
                        len(state.feed.served), state.model_version, self.ttl_s)

    def _popular(self, k: int, excluded: set[int], genre: str | None) -> list[Scored]:
        """The feed's fallback ranking, from the model whose vectors are being served."""
        published, artifacts = self.recommender.serving()
        return self.recommender.popular(published, artifacts, k, excluded, genre)

    def _start(self, session_id: str, user_id: int) -> SessionState:
        live = self.recommender.for_user(user_id, TOP_N)
        state = SessionState(user_id=user_id, model_version=live.model_version,
                             feed=FeedState(top=list(live.items), seen=set(live.rated)),
                             expires_at=self.clock() + self.ttl_s)
        with self._lock:
            existing = self._sessions.get(session_id)  # a concurrent first call won the race
            if existing is not None and existing.expires_at > self.clock():
                return existing
            self._sessions[session_id] = state
            self._evict()
        return state

    def _get(self, session_id: str) -> SessionState | None:
        with self._lock:
            state = self._sessions.get(session_id)
            if state is None:
                return None
            if state.expires_at <= self.clock():
                del self._sessions[session_id]
                return None
            self._sessions.move_to_end(session_id)
            return state

    def _evict(self) -> None:
        now = self.clock()
        for sid in [s for s, st in self._sessions.items() if st.expires_at <= now]:
            del self._sessions[sid]
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
