"""``/movies``: the catalogue's search, and item-to-item similarity from the model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from recommender.serve import queries
from recommender.serve.deps import EsDep, IndicesDep, RecommenderDep, SettingsDep, TopK
from recommender.serve.schemas import (
    INT32_MAX,
    CatalogueMatches,
    CatalogueMovie,
    SimilarMovie,
    SimilarMovies,
)

router = APIRouter(prefix="/movies", tags=["movies"])
MovieId = Annotated[int, Path(gt=0, le=INT32_MAX, description="MovieLens movie id.")]


@router.get("", response_model=CatalogueMatches)
async def search(q: Annotated[str, Query(min_length=1, max_length=200,
                                         description="Words of the title.")],
                 es: EsDep, settings: SettingsDep, indices: IndicesDep,
                 limit: Annotated[int, Query(ge=1, le=50)] = 10) -> CatalogueMatches:
    """Movies whose title matches ``q``, for a person looking for a movie to rate."""
    found = await queries.search_movies(es, settings, indices.movies, q, limit)
    return CatalogueMatches(query=q, movies=[CatalogueMovie(**{
        k: m.get(k) for k in CatalogueMovie.model_fields if m.get(k) is not None})
        for m in found])


@router.get("/{movie_id}/similar", response_model=SimilarMovies)
def similar(movie_id: MovieId, k: TopK, recommender: RecommenderDep) -> SimilarMovies:
    """Movies whose item factors are closest by cosine ("people who liked this also liked").

    Computed in-process from the model serving the published vectors (``foldin``: exact,
    sub-millisecond for MovieLens sizes); 404 for a movie the model does not know.
    """
    version, items = recommender.similar(movie_id, k)
    return SimilarMovies(movie_id=movie_id, model_version=version, items=[
        SimilarMovie(rank=i, movie_id=s.movie_id, title=s.info[0], year=s.info[1],
                     genres=s.info[2], similarity=s.score)
        for i, s in enumerate(items, start=1)])
