"""Property-based tests of the parsers that decide what the streaming jobs accept.

The parsers are Spark expressions (``streaming.parse_kafka_json`` with ``ingest``'s rules
and with the predictor's), so each Hypothesis example is a batch of generated payloads run
through them on a static DataFrame in the session's SparkSession, as a micro-batch would be.
For every payload: either no error, and then the typed fields are exactly what the JSON says
and satisfy the contract, or an error that gives a reason. Payloads built by the contracts
(``RatingEvent``) and bodies the API's pydantic model accepts are never refused; payloads
with one known defect are refused for that defect.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st
from pydantic import ValidationError
from pyspark.sql import DataFrame, Row
from pyspark.sql import types as T

from recommender.contracts import (
    MAX_EXCLUDE,
    MAX_REQUEST_ID_BYTES,
    RATING_MAX,
    RATING_MIN,
    PredictionRequest,
    RatingEvent,
)
from recommender.ingest_job import parse_events
from recommender.predict.job import REQUEST_SCHEMA, request_rules
from recommender.serve.schemas import INT32_MAX, PredictionRequestIn
from recommender.settings import Settings
from recommender.streaming import MAX_EPOCH_MS, parse_kafka_json
from tests.support.fuzzing import as_json_object, is_int

BATCH = 150
SETTINGS = hypothesis.settings(max_examples=8, deadline=None, database=None,
                               suppress_health_check=list(hypothesis.HealthCheck))
KAFKA_ROW = T.StructType([
    T.StructField("topic", T.StringType()), T.StructField("partition", T.IntegerType()),
    T.StructField("offset", T.LongType()), T.StructField("timestamp", T.TimestampType()),
    T.StructField("value", T.BinaryType())])
MAX_K = Settings().api.max_k


def parse_requests(kafka_rows: DataFrame) -> DataFrame:
    """The predictor's parse, with the arguments ``Predictor.process`` gives it."""
    return parse_kafka_json(kafka_rows, REQUEST_SCHEMA, request_rules(MAX_K), strict=True)


def run(spark: Any, parse: Callable[[DataFrame], DataFrame],
        payloads: list[bytes | None]) -> list[Row]:
    """``parse`` over one static batch of Kafka rows; its rows in payload order."""
    now = datetime.now(UTC)
    frame = spark.createDataFrame(
        [("fuzz", 0, i, now, None if p is None else bytearray(p)) for i, p in enumerate(payloads)],
        KAFKA_ROW)
    return sorted(parse(frame).collect(), key=lambda row: row.offset)


# --- strategies ------------------------------------------------------------------------------

ids = st.integers(1, INT32_MAX)
finite = st.floats(allow_nan=False, allow_infinity=False)  # NaN has its own defect below
numbers = st.one_of(st.integers(-5, 5), ids, st.integers(-(2**70), 2**70), finite)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12))
not_strings = st.one_of(st.integers(), finite, st.booleans(), st.lists(st.text(), max_size=2),
                        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=6)
half_stars = st.sampled_from([x / 2 for x in range(1, 11)])
EVENT_FIELDS = {"event_id": st.text(max_size=30), "user_id": ids, "movie_id": ids,
                "rating": half_stars | st.floats(RATING_MIN, RATING_MAX),
                "event_time": st.integers(0, 2**41),
                "event_type": st.sampled_from(["rating", "tag"]),
                "tag": st.text(max_size=20), "source": st.text(max_size=10)}
REQUEST_FIELDS = {"request_id": st.text(min_size=1, max_size=20), "user_id": ids,
                  "movie_id": ids, "k": st.integers(1, MAX_K),
                  "exclude": st.lists(ids, max_size=5),
                  "requested_at": st.integers(0, MAX_EPOCH_MS)}


def dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def objects(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of the contract's fields, each good or any JSON value, and
    now and then a field the contract does not know."""
    known = st.fixed_dictionaries({}, optional={
        name: st.one_of(good, good, json_values) for name, good in fields.items()})
    extra = st.dictionaries(st.text(max_size=8), json_values, max_size=1)
    return st.tuples(known, extra, st.booleans()).map(
        lambda t: {**t[0], **t[1]} if t[2] else t[0])


def payloads(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy[list[bytes | None]]:
    one = st.one_of(objects(fields).map(dumps), objects(fields).map(dumps),
                    json_values.map(dumps), st.binary(max_size=40), st.just(None))
    return st.lists(one, min_size=BATCH, max_size=BATCH)


# --- oracles: what a payload the parser accepted must look like ------------------------------


def text_field(row: Row, obj: dict[str, Any], name: str) -> None:
    """A string field is the JSON string, or absent."""
    assert obj.get(name) is None or isinstance(obj[name], str), f"{name} is not a string"
    assert getattr(row, name) == obj.get(name), name


def id_field(row: Row, obj: dict[str, Any], name: str) -> None:
    assert is_int(obj.get(name)) and obj[name] > 0 and getattr(row, name) == obj[name], name


def accepted_event(payload: bytes | None, row: Row) -> None:
    obj = as_json_object(payload)
    assert obj is not None, "accepted a payload that is not a JSON object"
    id_field(row, obj, "user_id")
    id_field(row, obj, "movie_id")
    assert is_int(obj.get("event_time")) and row.event_time == obj["event_time"]
    kind = obj.get("event_type")
    assert row.event_type == ("rating" if kind is None else kind) in ("rating", "tag")
    if row.event_type == "rating":
        rating = obj.get("rating")
        assert isinstance(rating, int | float) and not isinstance(rating, bool)
        assert RATING_MIN <= rating <= RATING_MAX and row.rating == rating
    else:
        assert row.tag and row.tag.strip(" "), "a tag event without a tag"
    for name in ("event_id", "tag", "source"):
        text_field(row, obj, name)


def accepted_request(payload: bytes | None, row: Row) -> None:
    obj = as_json_object(payload)
    assert obj is not None, "accepted a payload that is not a JSON object"
    assert set(obj) <= set(REQUEST_SCHEMA.fieldNames()), f"unknown fields {set(obj)}"
    text_field(row, obj, "request_id")
    assert row.request_id.strip(" "), "an empty request_id"
    id_field(row, obj, "user_id")
    assert (obj.get("movie_id") is None) != (obj.get("k") is None), "not exactly one target"
    if obj.get("movie_id") is not None:
        id_field(row, obj, "movie_id")
    else:
        assert is_int(obj["k"]) and 1 <= obj["k"] <= MAX_K and row.k == obj["k"]
    exclude = obj.get("exclude")
    assert exclude is None or (isinstance(exclude, list) and len(exclude) <= MAX_EXCLUDE
                               and all(is_int(m) and m > 0 for m in exclude))
    assert (row.exclude or None) == (exclude or None)
    assert len(row.request_id.encode()) <= MAX_REQUEST_ID_BYTES, "a request_id too long"
    assert obj.get("requested_at") is None or (
        is_int(obj["requested_at"]) and 0 <= obj["requested_at"] <= MAX_EPOCH_MS
        and row.requested_at == obj["requested_at"])


def check(rows: list[Row], batch: list[bytes | None],
          accepted: Callable[[bytes | None, Row], None]) -> None:
    assert len(rows) == len(batch)
    for payload, row in zip(batch, rows, strict=True):
        if row.error is None:
            try:
                accepted(payload, row)
            except AssertionError as exc:
                raise AssertionError(f"accepted {payload!r} as {row}: {exc}") from None
        else:
            assert row.error.strip(), f"refused {payload!r} without a reason"


# --- properties ------------------------------------------------------------------------------


@SETTINGS
@hypothesis.given(batch=payloads(EVENT_FIELDS))
def test_every_event_is_valid_with_its_own_fields_or_refused_with_a_reason(spark, batch):
    check(run(spark, parse_events, batch), batch, accepted_event)


@SETTINGS
@hypothesis.given(batch=payloads(REQUEST_FIELDS))
def test_every_request_is_valid_with_its_own_fields_or_refused_with_a_reason(spark, batch):
    check(run(spark, parse_requests, batch), batch, accepted_request)


contract_events = st.builds(
    RatingEvent, event_id=st.text(max_size=40), user_id=ids, movie_id=ids,
    rating=half_stars, event_time=st.integers(0, 2**41), event_type=st.just("rating"),
    tag=st.none(), source=st.text(max_size=20),
) | st.builds(
    RatingEvent, event_id=st.text(max_size=40), user_id=ids, movie_id=ids, rating=st.none(),
    event_time=st.integers(0, 2**41), event_type=st.just("tag"),
    tag=st.text(min_size=1, max_size=30).filter(lambda t: t.strip(" ")),
    source=st.text(max_size=20))


@SETTINGS
@hypothesis.given(events=st.lists(contract_events, min_size=BATCH, max_size=BATCH))
def test_events_the_contract_writes_are_accepted_as_written(spark, events):
    rows = run(spark, parse_events, [e.to_json() for e in events])
    for event, row in zip(events, rows, strict=True):
        assert row.error is None, (event, row.error)
        assert {k: getattr(row, k) for k in asdict(event)} == asdict(event)


extra_fields = st.dictionaries(
    st.one_of(st.just("_corrupt_record"), st.text(max_size=12)).filter(
        lambda name: name not in EVENT_FIELDS), json_values, min_size=1, max_size=2)


@SETTINGS
@hypothesis.given(events=st.lists(st.tuples(contract_events, extra_fields), min_size=BATCH,
                                  max_size=BATCH))
def test_fields_an_event_does_not_define_are_ignored(spark, events):
    """Events are not strict (producers may add fields): any extra field, whatever its name
    or value, changes nothing."""
    rows = run(spark, parse_events, [dumps({**asdict(e), **extra}) for e, extra in events])
    for (event, extra), row in zip(events, rows, strict=True):
        assert row.error is None, (event, extra, row.error)
        assert {k: getattr(row, k) for k in asdict(event)} == asdict(event)


api_bodies = st.fixed_dictionaries(
    {"user_id": st.integers(-2, INT32_MAX + 2)},
    optional={"request_id": st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
              "movie_id": st.integers(-2, INT32_MAX + 2), "k": st.integers(-2, 2 * MAX_K),
              "exclude": st.lists(st.integers(-2, INT32_MAX), max_size=30)})


def published(body: dict[str, Any]) -> PredictionRequest | None:
    """What ``POST /prediction-requests`` publishes for ``body``, or None when it answers
    422 (the pydantic model refuses it, or k is above ``api.max_k``)."""
    try:
        item = PredictionRequestIn.model_validate(body)
    except ValidationError:
        return None
    if item.k is not None and item.k > MAX_K:
        return None
    return PredictionRequest(request_id=item.request_id or uuid.uuid4().hex,
                             user_id=item.user_id, movie_id=item.movie_id, k=item.k,
                             exclude=list(item.exclude), requested_at=1_700_000_000_000)


@SETTINGS
@hypothesis.given(bodies=st.lists(api_bodies, min_size=BATCH, max_size=BATCH))
def test_requests_the_api_accepts_are_accepted_by_the_predictor(spark, bodies):
    requests = [r for r in map(published, bodies) if r is not None]
    hypothesis.assume(requests)
    rows = run(spark, parse_requests, [r.to_json() for r in requests])
    for request, row in zip(requests, rows, strict=True):
        assert row.error is None, (request, row.error)
        assert {k: getattr(row, k) for k in asdict(request)} == asdict(request)


EVENT = {"event_id": "e", "user_id": 7, "movie_id": 1, "rating": 4.0, "event_time": 1,
         "event_type": "rating", "tag": None, "source": "s"}
TAG_EVENT = {**EVENT, "event_type": "tag", "rating": None, "tag": "funny"}
EVENT_DEFECTS: dict[str, tuple[st.SearchStrategy, str]] = {
    "rating out of range": (finite.filter(
        lambda r: not RATING_MIN <= r <= RATING_MAX).map(lambda r: {**EVENT, "rating": r}),
        "rating out of range"),
    "no rating": (st.just({**EVENT, "rating": None}), "missing field: rating"),
    "no user": (st.just({k: v for k, v in EVENT.items() if k != "user_id"}),
                "missing field: user_id"),
    "id not positive": (st.integers(max_value=0).filter(lambda n: n >= -(2**31)).map(
        lambda n: {**EVENT, "movie_id": n}), "must be positive"),
    "id not an int": (st.one_of(st.text(), finite, st.booleans(),
                                st.integers(min_value=2**31)).map(
        lambda v: {**EVENT, "user_id": v}), "wrong type for field(s): user_id"),
    "unknown event type": (st.text().filter(lambda t: t not in ("rating", "tag")).map(
        lambda t: {**EVENT, "event_type": t}), "unknown event_type"),
    "blank tag": (st.sampled_from([None, "", "   "]).map(lambda t: {**TAG_EVENT, "tag": t}),
                  "missing field: tag"),
    "not an object": (json_values.filter(lambda v: not isinstance(v, dict)), "malformed JSON"),
    "event id not a string": (not_strings.map(lambda v: {**EVENT, "event_id": v}),
                              "event_id (not a string)"),
}
REQUEST = {"request_id": "r", "user_id": 7, "movie_id": 1, "k": None, "exclude": [],
           "requested_at": 1}
REQUEST_DEFECTS: dict[str, tuple[st.SearchStrategy, str]] = {
    "both targets": (st.integers(1, MAX_K).map(lambda k: {**REQUEST, "k": k}), "not both"),
    "no target": (st.just({**REQUEST, "movie_id": None}), "missing field: movie_id or k"),
    "k out of range": (st.integers().filter(lambda k: not 1 <= k <= MAX_K and abs(k) < 2**31)
                       .map(lambda k: {**REQUEST, "movie_id": None, "k": k}),
                       "k must be between"),
    "unknown field": (st.text(min_size=1).filter(lambda f: f not in REQUEST).map(
        lambda f: {**REQUEST, f: 1}), "unknown field(s)"),
    "blank request id": (st.sampled_from(["", "   "]).map(
        lambda r: {**REQUEST, "request_id": r}), "request_id must not be empty"),
    "bad exclude": (st.lists(st.integers(max_value=0).filter(lambda n: n >= -(2**31)),
                             min_size=1).map(lambda e: {**REQUEST, "exclude": e}),
                    "exclude must hold positive movie ids"),
    "no request id": (st.just({k: v for k, v in REQUEST.items() if k != "request_id"}),
                      "missing field: request_id"),
    "request id not a string": (not_strings.map(lambda v: {**REQUEST, "request_id": v}),
                                "request_id (not a string)"),
    "request id too long": (st.text(min_size=MAX_REQUEST_ID_BYTES + 1, max_size=400).filter(
        lambda r: r.strip(" ")).map(lambda r: {**REQUEST, "request_id": r}),
        f"request_id holds at most {MAX_REQUEST_ID_BYTES} bytes"),
    "requested_at out of range": (st.one_of(st.integers(-(2**63), -1),
                                            st.integers(MAX_EPOCH_MS + 1, 2**63 - 1)).map(
        lambda t: {**REQUEST, "requested_at": t}), "requested_at out of range"),
}
MARK = "\u2603"
BAD_UTF8 = st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0\x80", b"\x80", b"\xe2\x82"])
MESSAGE_DEFECTS: dict[str, tuple[st.SearchStrategy, str]] = {
    "not UTF-8": (BAD_UTF8.map(lambda bad: dumps({**REQUEST, "request_id": MARK}).replace(
        json.dumps(MARK).strip('"').encode(), bad)), "not valid UTF-8"),
    "NaN or Infinity": (st.sampled_from([math.nan, math.inf, -math.inf]).map(
        lambda x: dumps({**REQUEST, "movie_id": x})), "NaN and Infinity are not JSON numbers"),
    "more after the object": (st.tuples(st.sampled_from(["", " ", "\n", ",", "}", "]"]),
                                        json_values).map(
        lambda t: dumps(REQUEST) + t[0].encode() + dumps(t[1])), "characters after the object"),
}


@pytest.mark.parametrize("defect", sorted(EVENT_DEFECTS))
def test_an_event_with_one_defect_is_refused_for_it(spark, defect):
    strategy, reason = EVENT_DEFECTS[defect]
    refused_for(spark, parse_events, strategy.map(dumps), reason)


@pytest.mark.parametrize("defect", sorted(REQUEST_DEFECTS))
def test_a_request_with_one_defect_is_refused_for_it(spark, defect):
    strategy, reason = REQUEST_DEFECTS[defect]
    refused_for(spark, parse_requests, strategy.map(dumps), reason)


@pytest.mark.parametrize("defect", sorted(MESSAGE_DEFECTS))
@pytest.mark.parametrize("parse", [parse_events, parse_requests], ids=["event", "request"])
def test_a_message_that_is_not_exactly_one_utf8_json_object_is_refused(spark, parse, defect):
    strategy, reason = MESSAGE_DEFECTS[defect]
    refused_for(spark, parse, strategy, reason)


def refused_for(spark: Any, parse: Callable[[DataFrame], DataFrame],
                strategy: st.SearchStrategy[bytes], reason: str) -> None:
    @hypothesis.settings(SETTINGS, max_examples=3)
    @hypothesis.given(batch=st.lists(strategy, min_size=40, max_size=40))
    def refused(batch: list[bytes]) -> None:
        for payload, row in zip(batch, run(spark, parse, batch), strict=True):
            assert row.error is not None and reason in row.error, (payload, row.error)

    refused()


# Request ids at the edge of the fast path in ``streaming.non_string_fields``: strings that
# look like a rendered number, boolean, object or array are strings; numbers that Spark's
# reader renders unusually (overflow to Infinity, underflow, exponents) are not.
LOOK_ALIKE_IDS = ["12345", "-0", "1e5", "1.0E-308", "true", "false", "{", "[1]", "Infinity",
                  "-NaN", '"Infinity"']
ODD_NUMBERS = [b"1e999", b"-1e999", b"1E+2", b"-0", b"0.5e-400", b"12345678901234567890123"]


def test_ids_that_look_like_json_values_are_strings_and_odd_numbers_are_not(spark):
    look_alikes = [dumps({**REQUEST, "request_id": rid}) for rid in LOOK_ALIKE_IDS]
    numbers = [dumps(REQUEST).replace(b'"r"', number, 1) for number in ODD_NUMBERS]
    rows = run(spark, parse_requests, look_alikes + numbers)
    for rid, row in zip(LOOK_ALIKE_IDS, rows, strict=False):
        assert row.error is None and row.request_id == rid, (rid, row)
    for number, row in zip(ODD_NUMBERS, rows[len(look_alikes):], strict=True):
        assert row.error is not None and "request_id (not a string)" in row.error, (number, row)
