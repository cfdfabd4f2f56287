"""MovieLens readers, checksums and event ordering, plus the pure parts of the replayer
(pacing, resume bookkeeping, payload encoding). Real releases come from the shared data
folder (``data_dir`` fixture); malformed files are made up here, row by row."""

from __future__ import annotations

import io
import itertools
import json
import shutil
import zipfile
from pathlib import Path

import orjson
import pytest

from data_loading.datasets import REGISTRY, DatasetSpec, fetch, locate
from data_loading.readers import parse_genres, parse_title, rating_line_problem
from data_loading.replay import (
    ChunkFailed,
    Ledger,
    Pacer,
    ProgressFile,
    _skip,
    forget_progress,
    progress_path,
)
from recommender.contracts import RatingEvent
from recommender.errors import DatasetError
from recommender.settings import Settings

HEADER = "userId,movieId,rating,timestamp"


@pytest.fixture(scope="module")
def small(data_dir: Path):
    return locate("ml-latest-small", data_dir, download=False)


@pytest.fixture(scope="module")
def ml100k(data_dir: Path):
    return locate("ml-100k", data_dir, download=False)


def write(path: Path, lines: list[str], newline: str = "\r\n", encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())
    return path


def tiny_csv_release(root: Path, ratings: list[str], newline: str = "\r\n") -> Path:
    write(root / "ratings.csv", [HEADER, *ratings], newline)
    write(root / "movies.csv", ["movieId,title,genres", '1,"Heat, The (1995)",Action|Crime',
                                "2,Babylon 5,(no genres listed)"], newline)
    return root


# --- real releases: counts from ../shared/data/README.md ------------------------------------

def test_ml_latest_small_matches_the_published_counts(small):
    frame = small.ratings_frame
    assert len(frame) == 100_836
    assert frame["user_id"].nunique() == 610
    assert frame["movie_id"].nunique() == 9_724
    assert len(small.movies()) == 9_742
    assert len(small.tags) == 3_683
    assert set(frame["rating"].unique()) == {x / 2 for x in range(1, 11)}
    assert (frame["event_time"].min(), frame["event_time"].max()) == (
        828_124_615_000, 1_537_799_250_000)


def test_ml_100k_matches_the_published_counts(ml100k):
    frame = ml100k.ratings_frame
    assert (len(frame), frame["user_id"].nunique(), frame["movie_id"].nunique()) == (
        100_000, 943, 1_682)
    assert frame["rating"].value_counts().sort_index().tolist() == [
        6_110, 11_370, 27_145, 34_174, 21_201]
    movies = {m.movie_id: m for m in ml100k.movies()}
    assert len(movies) == 1_682
    assert (movies[1].title, movies[1].year) == ("Toy Story", 1995)
    assert movies[1].genres == ("Animation", "Children's", "Comedy")


def test_movies_carry_year_genres_and_links(small):
    movies = {m.movie_id: m for m in small.movies()}
    toy = movies[1]
    assert (toy.title, toy.year, toy.imdb_id, toy.tmdb_id) == ("Toy Story", 1995, "0114709", 862)
    assert toy.genres == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert sum(not m.genres for m in movies.values()) == 34  # "(no genres listed)"
    assert sum(m.year is None for m in movies.values()) == 12


def test_ratings_stream_in_timestamp_order_with_stable_ids(small):
    events = list(small.ratings())
    assert len(events) == len(small.ratings()) == 100_836
    assert all(a.event_time <= b.event_time for a, b in itertools.pairwise(events))
    first = events[0]
    assert first.event_id == f"ml-latest-small:{first.user_id}:{first.movie_id}:828124615000"
    assert (first.source, first.event_type, first.tag) == ("ml-latest-small", "rating", None)
    assert len({e.event_id for e in events}) == len(events)
    # ties keep file order (user, then movie), so every replay is the same sequence
    tied = [e for e in events if e.event_time == first.event_time]
    assert [(e.user_id, e.movie_id) for e in tied] == sorted((e.user_id, e.movie_id)
                                                             for e in tied)


def test_tags_interleave_in_time_order_with_unique_ids(small):
    events = list(small.events(include_tags=True))
    assert len(events) == 100_836 + 3_683
    assert all(a.event_time <= b.event_time for a, b in itertools.pairwise(events))
    tags = [e for e in events if e.event_type == "tag"]
    assert len(tags) == 3_683 and all(e.rating is None and e.tag for e in tags)
    assert len({e.event_id for e in events}) == len(events)  # same-second tags stay apart


def test_rating_stats_count_and_mean(small):
    stats = small.rating_stats()
    assert len(stats) == 9_724
    count, mean = stats[1]
    assert count == 215 and mean == pytest.approx(3.920930, abs=1e-6)


# --- parsing rules ------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("Heat (1995)", ("Heat", 1995)),
    ("Kolya (Kolya) (1996)", ("Kolya (Kolya)", 1996)),
    ("Babylon 5", ("Babylon 5", None)),
    ("Death Note: Desu nôto (2006\u20132007)", ("Death Note: Desu nôto", 2006)),  # en dash
    ("Stranger Things (2016- )", ("Stranger Things", 2016)),
    ("Les Misérables (2012) ", ("Les Misérables", 2012)),
])
def test_parse_title(raw, expected):
    assert parse_title(raw) == expected


def test_parse_genres():
    assert parse_genres("Action|Crime\r") == ("Action", "Crime")
    assert parse_genres("(no genres listed)") == ()


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_csv_release_reads_with_either_line_ending(tmp_path, newline):
    root = tiny_csv_release(tmp_path / "r", ["2,1,4.5,20", "1,2,3.0,10", "1,1,5.0,20"], newline)
    dataset = locate(str(root))
    assert [(e.user_id, e.movie_id, e.rating, e.event_time) for e in dataset.ratings()] == [
        (1, 2, 3.0, 10_000), (2, 1, 4.5, 20_000), (1, 1, 5.0, 20_000)]
    heat, babylon = dataset.movies()
    assert (heat.title, heat.year, heat.genres) == ("Heat, The", 1995, ("Action", "Crime"))
    assert (babylon.year, babylon.genres) == (None, ())


@pytest.mark.parametrize(("bad", "problem"), [
    ("1,2,x,10", "not a number"),
    ("1,2,7.0,10", "rating 7.0 is outside 0.5..5.0"),
    ("1,2,3.0", "expected 4 fields, found 3"),
    ("1,2,3.0,10,9", "expected 4 fields, found 5"),
    ("0,2,3.0,10", "user and movie ids must be positive"),
])
def test_malformed_rating_names_file_and_line(tmp_path, bad, problem):
    root = tiny_csv_release(tmp_path / "r", ["1,1,4.0,5", "1,3,4.0,5", bad, "2,2,2.0,6"])
    with pytest.raises(DatasetError, match=r"ratings\.csv, line 4: " + problem):
        locate(str(root)).ratings_frame  # noqa: B018


def test_wrong_header_is_refused(tmp_path):
    root = tiny_csv_release(tmp_path / "r", [])
    write(root / "ratings.csv", ["user,movie,rating,ts", "1,1,4.0,5"])
    with pytest.raises(DatasetError, match="line 1: header"):
        locate(str(root)).ratings_frame  # noqa: B018


def test_rating_line_rules():
    assert rating_line_problem(["1", "2", "0.5", "0"]) is None
    assert "outside" in rating_line_problem(["1", "2", "0", "0"])


def test_ml_1m_layout(tmp_path, monkeypatch):
    root = tmp_path / "ml-1m"
    write(root / "ratings.dat", ["1::10::5::978300760", "2::10::3::978300000"], "\n")
    write(root / "movies.dat", ["10::Amélie (2001)::Comedy|Romance"], "\n", "latin-1")
    dataset = locate("ml-1m", tmp_path, download=False, cache_dir=tmp_path / "cache")
    assert [(e.user_id, e.rating) for e in dataset.ratings()] == [(2, 3.0), (1, 5.0)]
    [movie] = dataset.movies()
    assert (movie.title, movie.year, movie.genres) == ("Amélie", 2001, ("Comedy", "Romance"))
    write(root / "ratings.dat", ["1::10::5::978300760", "1:10::5::1"], "\n")
    with pytest.raises(DatasetError, match=r"ratings\.dat, line 2"):
        locate("ml-1m", tmp_path, download=False).ratings_frame  # noqa: B018


# --- finding and trusting a release -------------------------------------------------------

def test_a_modified_copy_fails_its_checksum(tmp_path, data_dir):
    copy = tmp_path / "ml-latest-small"
    shutil.copytree(data_dir / "ml-latest-small", copy)
    ratings = copy / "ratings.csv"
    ratings.chmod(0o644)
    ratings.write_bytes(ratings.read_bytes().replace(b"1,1,4.0,", b"1,1,5.0,", 1))
    with pytest.raises(DatasetError, match=r"ratings\.csv: sha256 .* was modified"):
        locate("ml-latest-small", tmp_path, download=False)


def test_missing_release_says_how_to_point_at_it(tmp_path):
    with pytest.raises(DatasetError, match="RECOMMENDER_DATA__DATA_DIR"):
        locate("ml-25m", tmp_path, cache_dir=tmp_path, download=False)
    with pytest.raises(DatasetError, match="unknown dataset"):
        locate("ml-42", tmp_path, download=False)


def test_registry_points_at_grouplens():
    spec = REGISTRY["ml-latest-small"]
    assert spec.url == "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
    assert spec.sha256 == "859da233c6929ebc9202e9516cdefa8a3c695aef67d1878249d6036c3513c023"


def _zip_of(root: Path, name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(root.iterdir()):
            zf.write(f, f"{name}/{f.name}")
    return buf.getvalue()


def test_fetch_verifies_the_zip_and_unpacks_once(tmp_path):
    from hashlib import sha256

    payload = _zip_of(tiny_csv_release(tmp_path / "src", ["1,1,4.0,5"]), "ml-x")
    calls = []

    def opener(url, timeout):
        calls.append(url)
        return io.BytesIO(payload)

    bad = DatasetSpec("ml-x", "csv", sha256=b"0".hex() * 32)
    with pytest.raises(DatasetError, match="differs from the expected"):
        fetch(bad, tmp_path / "cache", opener=opener)
    assert not list((tmp_path / "cache").glob("*.zip*"))  # nothing half-written is kept
    good = DatasetSpec("ml-x", "csv", sha256=sha256(payload).hexdigest())
    path = fetch(good, tmp_path / "cache", opener=opener)
    assert (path / "ratings.csv").exists() and calls[-1].endswith("/ml-x.zip")


def test_failed_download_is_a_dataset_error(tmp_path):
    def opener(url, timeout):
        raise OSError("network unreachable")

    with pytest.raises(DatasetError, match="give --data-dir"):
        fetch(DatasetSpec("ml-x", "csv"), tmp_path, opener=opener)


def test_a_broken_zip_or_folder_is_a_dataset_error(tmp_path):
    (tmp_path / "ml-x.zip").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a valid zip"):
        fetch(DatasetSpec("ml-x", "csv"), tmp_path)
    half = tmp_path / "half"
    write(half / "ratings.csv", [HEADER, "1,1,4.0,5"])
    with pytest.raises(DatasetError, match=r"no movies\.csv"):
        locate(str(half))


# --- replay: payload, pacing and resume bookkeeping ----------------------------------------

def test_fast_payload_is_the_contract_json():
    event = RatingEvent("s:1:2:3", 1, 2, 4.5, 3, "tag", "Amélie \"quoted\"", "s")
    assert orjson.loads(orjson.dumps(event)) == json.loads(event.to_json())


def test_pacer_rate_and_speedup():
    by_rate = Pacer(rate=100)
    assert [by_rate.due(0) for _ in range(3)] == [0.0, 0.01, 0.02]
    sped = Pacer(speedup=1000)
    assert [sped.due(t) for t in (0, 1_000, 3_000)] == [0.0, 0.001, 0.003]
    capped = Pacer(speedup=10, max_gap_s=2.0)
    assert [capped.due(t) for t in (0, 86_400_000, 86_400_500)] == [0.0, 2.0, 2.05]
    assert not Pacer().active


def test_progress_file_round_trip(tmp_path):
    settings = Settings(stack={"state_dir": tmp_path / "stack"})
    path = progress_path(settings, "ratings", "my/data set")
    assert path == tmp_path / "replay" / "ratings-my_data_set.json"
    state = ProgressFile(path)
    assert state.load() == (0, None)
    state.save(42, "s:1:2:3")
    assert state.load() == (42, "s:1:2:3")
    path.write_text("{oops")
    with pytest.raises(DatasetError, match="corrupt"):
        state.load()


def test_forgetting_a_topic_deletes_its_progress_files_only(tmp_path):
    settings = Settings(stack={"state_dir": tmp_path / "stack"})
    mine = [progress_path(settings, "it-1-ratings", source) for source in ("a", "b")]
    other = progress_path(settings, "it-2-ratings", "a")
    for path in (*mine, other):
        ProgressFile(path).save(1, "s:1:1:1")
    assert sorted(forget_progress(settings, "it-1-ratings")) == sorted(mine)
    assert [p.exists() for p in (*mine, other)] == [False, False, True]


def _events(n: int) -> list[RatingEvent]:
    return [RatingEvent(f"s:{i}:1:{i}", i, 1, 3.0, i, "rating", None, "s") for i in range(n)]


def test_skip_drops_exactly_the_acknowledged_prefix(tmp_path):
    events = _events(10)
    rest = list(_skip(iter(events), 4, events[3].event_id, tmp_path))
    assert rest == events[4:]
    assert list(_skip(iter(events), 0, None, tmp_path)) == events
    assert list(_skip(iter(events), 99, None, tmp_path)) == []


def test_skip_refuses_a_changed_stream(tmp_path):
    with pytest.raises(DatasetError, match="the stream changed"):
        list(_skip(iter(_events(10)), 4, "s:9:9:9", tmp_path))



def test_progress_moves_only_past_fully_acknowledged_leading_chunks(tmp_path):
    state = ProgressFile(tmp_path / "progress.json")
    ledger = Ledger(state, skipped=10, last_id="s:9")
    first = ledger.current  # three records sent in the first chunk
    second = ledger.cut(3, "s:12")
    third = ledger.cut(5, "s:14")  # two records in the second chunk
    second(None, None)
    second(None, None)  # the second chunk is acknowledged before the first
    ledger.settle()
    assert state.load() == (0, None), "progress must not skip an unacknowledged chunk"
    first(None, None)
    first(None, None)
    ledger.settle()
    assert state.load() == (0, None)
    first(None, None)
    ledger.settle()
    assert (ledger.acked, state.load()) == (5, (15, "s:14"))
    ledger.cut(6, "s:15")
    third("timed out", None)
    with pytest.raises(ChunkFailed, match="timed out"):
        ledger.settle()
    assert state.load() == (15, "s:14"), "a failed chunk is never recorded"
