"""MovieLens releases: where to find them, how to trust them, and how to read them.

Every release GroupLens ships comes in one of three layouts, so one ``Dataset`` class reads
them all and the rest of the pipeline never sees a file format:

* ``csv`` (ml-latest-small, ml-latest, ml-20m, ml-25m): ``ratings.csv``, ``movies.csv``,
  ``tags.csv``, ``links.csv`` with headers, UTF-8, CRLF line endings in some releases.
* ``ml-100k``: tab-separated ``u.data``, ``|``-separated latin-1 ``u.item`` with 19 genre
  flags named by ``u.genre``.
* ``ml-1m``: ``::``-separated latin-1 ``ratings.dat`` and ``movies.dat``.

Ratings are read with pandas (C parser, fixed dtypes: ml-25m sorts in memory in seconds) and
come out in timestamp order, ties in file order, so every replay of a release is the same
sequence of events. A malformed file fails with the file name and line number, never with a
half-loaded dataset. The data itself is never bundled (see the GroupLens licenses).

Example::

    ds = locate("ml-latest-small", Path("../shared/data"))
    first = next(iter(ds.ratings()))   # RatingEvent(event_id='ml-latest-small:429:595:...')
"""

from __future__ import annotations

import hashlib
import heapq
import os
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from data_loading.readers import (
    REQUIRED,
    Layout,
    Movie,
    Tag,
    parse_genres,
    parse_title,
    read_movies,
    read_ratings,
    read_tags,
)
from recommender.contracts import RatingEvent
from recommender.errors import DatasetError

BASE_URL = "https://files.grouplens.org/datasets/movielens"
HINT = "give --data-dir or set RECOMMENDER_DATA__DATA_DIR"
_CHUNK = 100_000  # rows turned into Python objects at a time: bounded memory on ml-25m


@dataclass(frozen=True)
class DatasetSpec:
    """A known release: its layout and the checksums that prove a copy is the original."""

    name: str
    layout: Layout
    sha256: str | None = None  # of the GroupLens zip, where known
    files: dict[str, str] = field(default_factory=dict)  # sha256 per extracted file

    @property
    def url(self) -> str:
        return f"{BASE_URL}/{self.name}.zip"


REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("ml-latest-small", "csv",
                "859da233c6929ebc9202e9516cdefa8a3c695aef67d1878249d6036c3513c023", {
        "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
        "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
        "tags.csv": "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",
        "links.csv": "97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31"}),
    DatasetSpec("ml-100k", "ml-100k", None, {
        "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
        "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb"}),
    DatasetSpec("ml-1m", "ml-1m"),
    DatasetSpec("ml-20m", "csv"),
    DatasetSpec("ml-25m", "csv"),
    DatasetSpec("ml-latest", "csv"),
)}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Events:
    """A sized, re-iterable stream of ``RatingEvent`` in time order (ratings before tags on
    a tie). Sized so progress bars know the total; re-iterable so a retry starts over."""

    def __init__(self, source: str, frame: pd.DataFrame, tags: list[Tag] | None = None):
        self.source, self._frame, self._tags = source, frame, tags or []

    def __len__(self) -> int:
        return len(self._frame) + len(self._tags)

    def __iter__(self) -> Iterator[RatingEvent]:
        ratings = rating_events(self._frame, self.source)
        if not self._tags:
            return ratings
        return heapq.merge(ratings, tag_events(self._tags, self.source),
                           key=lambda e: e.event_time)


def rating_events(frame: pd.DataFrame, source: str) -> Iterator[RatingEvent]:
    """Rows of a ratings frame (user_id, movie_id, rating, event_time) as events, in order."""
    for start in range(0, len(frame), _CHUNK):
        part = frame.iloc[start:start + _CHUNK]
        for u, m, r, t in zip(part["user_id"].tolist(), part["movie_id"].tolist(),
                              part["rating"].tolist(), part["event_time"].tolist(), strict=True):
            yield RatingEvent(f"{source}:{u}:{m}:{t}", u, m, r, t, "rating", None, source)


def tag_events(tags: list[Tag], source: str) -> Iterator[RatingEvent]:
    """Tags as events. A user can put several tags on one movie in the same second, so a tag's
    event_id appends ``:tag:<crc32 of the tag>`` to stay unique and stable."""
    for t in tags:
        suffix = f"{zlib.crc32(t.tag.encode()):08x}"
        yield RatingEvent(f"{source}:{t.user_id}:{t.movie_id}:{t.event_time}:tag:{suffix}",
                          t.user_id, t.movie_id, None, t.event_time, "tag", t.tag, source)


@dataclass
class Dataset:
    """One release on disk. Readers cache what they parse; the object is cheap to create."""

    name: str
    path: Path
    layout: Layout
    spec: DatasetSpec | None = None

    def verify(self) -> None:
        """Compare every file with a known checksum; an edited copy is refused by name."""
        for fname, expected in (self.spec.files if self.spec else {}).items():
            if not (self.path / fname).exists():  # optional files (tags, links) may be absent
                continue
            got = sha256_of(self.path / fname)
            if got != expected:
                raise DatasetError(f"{self.path / fname}: sha256 {got} differs from the "
                                   f"original's {expected}; this copy was modified")

    @cached_property
    def ratings_frame(self) -> pd.DataFrame:
        """user_id, movie_id (int32), rating (float32), event_time (int64 ms), time-sorted."""
        frame = read_ratings(self.path, self.layout)
        return frame.sort_values("event_time", kind="stable", ignore_index=True)

    def ratings(self) -> Events:
        return Events(self.name, self.ratings_frame)

    def events(self, include_tags: bool = False) -> Events:
        return Events(self.name, self.ratings_frame, self.tags if include_tags else None)

    @cached_property
    def tags(self) -> list[Tag]:
        """Tags in time order (file order on ties); releases without tags give []."""
        path = self.path / "tags.csv"
        if self.layout != "csv" or not path.exists():
            return []
        return sorted(read_tags(path), key=lambda t: t.event_time)

    def movies(self) -> list[Movie]:
        """The catalogue with imdb/tmdb ids from links.csv where the release has them."""
        return read_movies(self.path, self.layout)

    def rating_stats(self) -> dict[int, tuple[int, float]]:
        """movie_id -> (number of ratings, mean rating)."""
        ratings = self.ratings_frame["rating"].astype("float64")
        grouped = ratings.groupby(self.ratings_frame["movie_id"]).agg(["count", "mean"])
        return {int(m): (int(c), float(v)) for m, c, v in
                zip(grouped.index, grouped["count"], grouped["mean"], strict=True)}


def locate(name: str, data_dir: Path | None = None, *, cache_dir: Path | None = None,
           download: bool = True, verify: bool = True) -> Dataset:
    """Find ``name`` in ``data_dir/<name>``, else the user cache, else download it once.

    ``name`` may also be a directory in the ml-latest-small layout (e.g. the output of
    ``recommender generate --output csv``). Defaults come from the settings
    (``data.data_dir``, ``stack.cache_dir``).
    """
    from recommender.settings import get_settings

    settings = get_settings()
    data_dir = data_dir if data_dir is not None else settings.data.data_dir
    cache_root = (cache_dir or settings.stack.cache_dir) / "datasets"
    custom = Path(name).expanduser()
    if name not in REGISTRY and (custom / "ratings.csv").is_file():
        missing = [f for f in REQUIRED["csv"] if not (custom / f).is_file()]
        if missing:
            raise DatasetError(f"{custom} has ratings.csv but no {', '.join(missing)}")
        return Dataset(custom.resolve().name, custom, "csv")
    spec = REGISTRY.get(name)
    if spec is None:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(REGISTRY)} "
                           "or a directory holding ratings.csv and movies.csv")
    places = [p / name for p in (data_dir, cache_root) if p is not None]
    for place in places:
        if all((place / f).is_file() for f in REQUIRED[spec.layout]):
            dataset = Dataset(name, place, spec.layout, spec)
            if verify:
                dataset.verify()
            return dataset
    searched = ", ".join(str(p) for p in places)
    if not download:
        raise DatasetError(f"{name} not found in {searched}; {HINT}")
    path = fetch(spec, cache_root, searched)
    dataset = Dataset(name, path, spec.layout, spec)
    if verify:
        dataset.verify()
    return dataset


def fetch(spec: DatasetSpec, root: Path, searched: str = "",
          opener: Callable[..., object] = urllib.request.urlopen) -> Path:
    """Download ``spec``'s zip into ``root``, check its sha256 and unpack it to
    ``root/<name>``. Writes go to temporary names first, so an interrupted download is
    never mistaken for a dataset."""
    root.mkdir(parents=True, exist_ok=True)
    zip_path = root / f"{spec.name}.zip"
    where = f" (looked in {searched})" if searched else ""
    if not zip_path.exists():
        part = zip_path.with_suffix(".zip.part")
        try:
            with opener(spec.url, timeout=60) as resp, open(part, "wb") as out:  # type: ignore[attr-defined]
                shutil.copyfileobj(resp, out, 1 << 20)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise DatasetError(f"{spec.name} is not on this machine{where} and downloading "
                               f"{spec.url} failed ({exc}); {HINT}") from exc
        got = sha256_of(part)
        if spec.sha256 and got != spec.sha256:
            part.unlink()
            raise DatasetError(f"{spec.url}: sha256 {got} differs from the expected "
                               f"{spec.sha256}; the download is corrupt or was altered")
        os.replace(part, zip_path)
    target = root / spec.name
    try:
        with tempfile.TemporaryDirectory(dir=root) as tmp, zipfile.ZipFile(zip_path) as zf:
            if (bad := zf.testzip()) is not None:
                raise DatasetError(f"{zip_path}: member {bad} fails its CRC; delete the file")
            zf.extractall(tmp)
            if not (Path(tmp) / spec.name).is_dir():
                raise DatasetError(f"{zip_path} has no {spec.name}/ folder; is it a MovieLens "
                                   "release?")
            if not target.exists():
                os.replace(Path(tmp) / spec.name, target)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{zip_path} is not a valid zip ({exc}); delete it and retry") from exc
    return target


__all__ = ["REGISTRY", "Dataset", "DatasetSpec", "Events", "Movie", "Tag", "fetch", "locate",
           "parse_genres", "parse_title", "rating_events", "sha256_of", "tag_events"]
