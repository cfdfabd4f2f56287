"""The MovieLens file formats, parsed strictly.

Kept apart from ``datasets`` (which decides *where* a release is and whether to trust it) so
that each format's quirks live in one place: CRLF line endings in the CSV releases, latin-1
in ml-100k and ml-1m, ``::`` separators, genre flags, ``(no genres listed)``.

Ratings go through pandas' C parser with fixed dtypes for speed. When pandas refuses a file,
or a value is out of range, a line-by-line scan finds the first bad line so the error names
the file and line number instead of a pandas message.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

import pandas as pd

from recommender.contracts import RATING_MAX, RATING_MIN
from recommender.errors import DatasetError

Layout = Literal["csv", "ml-100k", "ml-1m"]
NO_GENRES = "(no genres listed)"
REQUIRED: dict[str, tuple[str, ...]] = {
    "csv": ("ratings.csv", "movies.csv"),
    "ml-100k": ("u.data", "u.item", "u.genre"),
    "ml-1m": ("ratings.dat", "movies.dat"),
}
RATING_COLUMNS = ["user_id", "movie_id", "rating", "event_time"]
_DTYPES = {"user_id": "int32", "movie_id": "int32", "rating": "float32", "event_time": "int64"}
_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\)\s*$")


@dataclass(frozen=True)
class Movie:
    """One catalogue entry; ``title`` without the trailing ``(year)``."""

    movie_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    imdb_id: str | None = None
    tmdb_id: int | None = None


@dataclass(frozen=True)
class Tag:
    user_id: int
    movie_id: int
    tag: str
    event_time: int  # epoch ms


def parse_title(raw: str) -> tuple[str, int | None]:
    """``"Heat (1995)"`` -> ``("Heat", 1995)``; a title without a year keeps year None."""
    match = _YEAR.match(raw)
    return (match["title"], int(match["year"])) if match else (raw.strip(), None)


def parse_genres(raw: str) -> tuple[str, ...]:
    """``"A|B"`` -> ``("A", "B")``; MovieLens's ``(no genres listed)`` -> ``()``."""
    return tuple(g for g in raw.strip().split("|") if g and g != NO_GENRES)


# --- ratings -------------------------------------------------------------------------------

def read_ratings(directory: Path, layout: Layout) -> pd.DataFrame:
    """All ratings of a release, file order, ``event_time`` in epoch ms."""
    if layout == "csv":
        path, sep, header, encoding = directory / "ratings.csv", ",", 1, "utf-8"
        _expect_header(path, ["userId", "movieId", "rating", "timestamp"], encoding)
        opts: dict = {"sep": ",", "header": 0, "names": RATING_COLUMNS}
    elif layout == "ml-100k":
        path, sep, header, encoding = directory / "u.data", "\t", 0, "latin-1"
        opts = {"sep": "\t", "header": None, "names": RATING_COLUMNS}
    else:  # "a::b" split on ":" keeps the C parser: values sit in columns 0, 2, 4, 6
        path, sep, header, encoding = directory / "ratings.dat", "::", 0, "latin-1"
        opts = {"sep": ":", "header": None, "usecols": [0, 2, 4, 6], "names": RATING_COLUMNS}
    try:
        frame = pd.read_csv(path, dtype=_DTYPES, index_col=False, engine="c",
                            encoding=encoding, **opts)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        _raise_first_bad_line(path, sep, header, encoding, fallback=str(exc))
    if len(frame) and not _all_valid(frame):
        _raise_first_bad_line(path, sep, header, encoding, fallback="a value is out of range")
    frame["event_time"] *= 1000
    return frame


def _all_valid(f: pd.DataFrame) -> bool:
    return bool(((f["user_id"] > 0) & (f["movie_id"] > 0) & (f["event_time"] >= 0)
                 & f["rating"].between(RATING_MIN, RATING_MAX)).all())


def rating_line_problem(fields: list[str]) -> str | None:
    """Why one split ratings line is invalid, or None. The rules ``read_ratings`` enforces."""
    if len(fields) != 4:
        return f"expected 4 fields, found {len(fields)}"
    try:
        user, movie, rating, ts = int(fields[0]), int(fields[1]), float(fields[2]), int(fields[3])
    except ValueError as exc:
        return f"not a number ({exc})"
    if user <= 0 or movie <= 0:
        return "user and movie ids must be positive"
    if not RATING_MIN <= rating <= RATING_MAX:
        return f"rating {rating} is outside {RATING_MIN}..{RATING_MAX}"
    if ts < 0:
        return "negative timestamp"
    return None


def _raise_first_bad_line(path: Path, sep: str, header: int, encoding: str,
                          fallback: str) -> NoReturn:
    for number, line in _lines(path, encoding):
        if number <= header or not line.strip():
            continue
        if problem := rating_line_problem(line.rstrip("\r\n").split(sep)):
            raise DatasetError(f"{path}, line {number}: {problem}: {line.rstrip()!r}")
    raise DatasetError(f"{path}: cannot be read: {fallback}")


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    with open(path, encoding=encoding, newline="") as f:
        number = 0
        try:
            for number, line in enumerate(f, 1):
                yield number, line
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}, line {number + 1}: not {encoding} text ({exc})") from None


def _expect_header(path: Path, expected: list[str], encoding: str) -> None:
    with open(path, encoding=encoding, newline="") as f:
        got = f.readline().rstrip("\r\n").lstrip("\ufeff").split(",")
    if got != expected:
        raise DatasetError(f"{path}, line 1: header {','.join(got)!r}, expected "
                           f"{','.join(expected)!r}; is this a MovieLens file?")


# --- movies and tags -----------------------------------------------------------------------

def read_movies(directory: Path, layout: Layout) -> list[Movie]:
    """The catalogue; ids from links.csv are merged in when the release has one."""
    if layout == "ml-100k":
        return _read_100k_items(directory)
    if layout == "ml-1m":
        path = directory / "movies.dat"
        rows = _split_rows(path, "::", 3, "latin-1")
    else:
        path = directory / "movies.csv"
        rows = _csv_rows(path, ["movieId", "title", "genres"])
    links = _read_links(directory / "links.csv") if layout == "csv" else {}
    movies = []
    for number, (movie_id, raw_title, genres) in rows:
        mid = _int(movie_id, path, number)
        title, year = parse_title(raw_title)
        imdb, tmdb = links.get(mid, (None, None))
        movies.append(Movie(mid, title, year, parse_genres(genres), imdb, tmdb))
    return movies


def _read_100k_items(directory: Path) -> list[Movie]:
    names = [f[0] for _, f in _split_rows(directory / "u.genre", "|", 2, "latin-1")]
    path = directory / "u.item"
    movies = []
    for number, fields in _split_rows(path, "|", 5 + len(names), "latin-1"):
        title, year = parse_title(fields[1])
        if year is None and fields[2][-4:].isdigit():  # release date "01-Jan-1995"
            year = int(fields[2][-4:])
        genres = tuple(g for g, flag in zip(names, fields[5:], strict=True)
                       if flag == "1" and g != "unknown")
        movies.append(Movie(_int(fields[0], path, number), title, year, genres))
    return movies


def _read_links(path: Path) -> dict[int, tuple[str | None, int | None]]:
    if not path.exists():
        return {}
    links = {}
    for number, (movie_id, imdb, tmdb) in _csv_rows(path, ["movieId", "imdbId", "tmdbId"]):
        links[_int(movie_id, path, number)] = (
            imdb or None, _int(tmdb, path, number) if tmdb else None)
    return links


def read_tags(path: Path) -> list[Tag]:
    """tags.csv in file order, ``event_time`` in epoch ms."""
    tags = []
    for number, (user, movie, tag, ts) in _csv_rows(path, ["userId", "movieId", "tag",
                                                           "timestamp"]):
        tags.append(Tag(_int(user, path, number), _int(movie, path, number), tag,
                        _int(ts, path, number) * 1000))
    return tags


def _csv_rows(path: Path, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    """Rows after a checked header, each with its line number; quoted commas are fine."""
    _expect_header(path, header, "utf-8")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        try:
            for row in reader:
                if len(row) != len(header):
                    _bad(path, reader.line_num, f"expected {len(header)} fields, "
                                                f"found {len(row)}")
                yield reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as exc:
            _bad(path, reader.line_num + 1, str(exc))


def _split_rows(path: Path, sep: str, width: int,
                encoding: str) -> Iterator[tuple[int, list[str]]]:
    for number, line in _lines(path, encoding):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split(sep)
        if len(fields) != width:
            _bad(path, number, f"expected {width} fields separated by {sep!r}, "
                               f"found {len(fields)}")
        yield number, fields


def _int(value: str, path: Path, number: int) -> int:
    try:
        return int(value)
    except ValueError:
        _bad(path, number, f"{value!r} is not an integer")


def _bad(path: Path, number: int, problem: str) -> NoReturn:
    raise DatasetError(f"{path}, line {number}: {problem}")
