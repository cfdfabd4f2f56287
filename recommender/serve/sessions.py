"""``/sessions/{session_id}/next``: a feed that never repeats within a session."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from recommender.serve.deps import SessionsDep
from recommender.serve.schemas import INT32_MAX, Movie, SessionId, SessionItem

router = APIRouter(prefix="/sessions", tags=["sessions"])


@router.get("/{session_id}/next", response_model=SessionItem)
def next_movie(session_id: Annotated[SessionId, Path(description="Any client-chosen id.")],
               user_id: Annotated[int, Query(gt=0, le=INT32_MAX)],
               sessions: SessionsDep) -> SessionItem:
    """The next movie for this session: a random pick among the user's top 30 not served
    yet; once those are used, popular unserved movies of the last served movie's genre.

    Sessions live in this API process and expire 30 minutes after their last call (see
    ``feed_state``); a session id belongs to the user of its first call.
    """
    pick = sessions.next(session_id, user_id)
    title, year, genres = pick.movie.info
    return SessionItem(session_id=session_id, user_id=user_id,
                       movie=Movie(movie_id=pick.movie.movie_id, title=title, year=year,
                                   genres=genres),
                       source=pick.source, genre=pick.genre, served=pick.served,
                       model_version=pick.model_version, expires_in_s=pick.expires_in_s)
