"""Random and mutated messages for the pipeline's input topics, reproducible from a seed.

Each message starts as a valid payload (a rating or tag event, a pair or top-k request) and
most are then broken the ways real producers break them: a field dropped, nulled, of the
wrong type or out of range, an unknown field, a duplicated key, huge strings and numbers,
deep nesting, odd Unicode, then at the byte level truncation, flipped and inserted bytes,
invalid UTF-8, trailing garbage; plus JSON that is not an object, random bytes, empty
messages and tombstones. Several JSON-level mutations may stack.

The oracles say what a job that did *not* dead-letter a message must have done with it,
read the way any consumer reads JSON (``json.loads``): which Cassandra row a rating event
lands in, which request id a prediction answers.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Payload = dict[str, Any]
ODD_VALUES: list[Any] = [
    "", " ", "x", "1", "4.5", "NaN", True, False, 0, -1, 1.5, -0.0, 2**31 - 1, 2**31,
    -(2**31) - 1, 2**63 - 1, -(2**63), 2**64, 1e308, -1e-308, math.nan, math.inf, -math.inf,
    [], [1, 2], [None], {}, {"a": 1}, None, "\u0000", "\t", "😀" * 3, "\ud800",
]
NESTED = "[" * 2000 + "]" * 2000  # deeper than Jackson's default nesting limit (1000)


@dataclass(frozen=True)
class Message:
    """One fuzzed message: its key, its value (None is a tombstone) and how it was made."""

    key: bytes | None
    value: bytes | None
    recipe: str


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, allow_nan=True).encode()


# --- JSON-level mutations: payload -> payload ------------------------------------------------


def drop_field(p: Payload, rng: random.Random) -> Payload:
    return {k: v for k, v in p.items() if k != rng.choice(list(p) or [""])}


def null_field(p: Payload, rng: random.Random) -> Payload:
    return {**p, rng.choice(list(p) or ["x"]): None}


def odd_value(p: Payload, rng: random.Random) -> Payload:
    return {**p, rng.choice(list(p) or ["x"]): rng.choice(ODD_VALUES)}


def unknown_field(p: Payload, rng: random.Random) -> Payload:
    return {**p, rng.choice(["movieId", "userId", "extra", "_corrupt_record", "RATING", ""]):
            rng.choice(ODD_VALUES)}


def long_string(p: Payload, rng: random.Random) -> Payload:
    # past Elasticsearch's limits: 512 bytes for an _id, 32,766 for a keyword
    return {**p, rng.choice(list(p) or ["x"]): rng.choice(["é" * 300, "x" * 5_000,
                                                           "x" * 40_000])}


def odd_unicode(p: Payload, rng: random.Random) -> Payload:
    text = "".join(chr(rng.choice([rng.randrange(0x20), rng.randrange(0x20, 0x2FFFF)]))
                   for _ in range(rng.randrange(1, 12)))
    return {**p, rng.choice(list(p) or ["x"]): text}


JSON_MUTATIONS: list[Callable[[Payload, random.Random], Payload]] = [
    drop_field, null_field, odd_value, odd_value, unknown_field, long_string, odd_unicode]


# --- text and byte-level mutations: payload -> bytes ----------------------------------------


def duplicate_key(p: Payload, rng: random.Random) -> bytes:
    text = dumps(p)
    if not p:
        return text
    return text[:-1] + b"," + dumps({rng.choice(list(p)): rng.choice(ODD_VALUES)})[1:]


def deep_nesting(p: Payload, rng: random.Random) -> bytes:
    field = rng.choice(list(p) or ["x"])
    return dumps({**p, field: "@@NESTED@@"}).replace(b'"@@NESTED@@"', NESTED.encode())


def not_an_object(p: Payload, rng: random.Random) -> bytes:
    return dumps(rng.choice([list(p.values()), rng.choice(ODD_VALUES), [p], str(p)]))


def truncated(p: Payload, rng: random.Random) -> bytes:
    text = dumps(p)
    return text[:rng.randrange(len(text))]


def flipped_byte(p: Payload, rng: random.Random) -> bytes:
    text = bytearray(dumps(p))
    position = rng.randrange(len(text))
    text[position] ^= 1 << rng.randrange(8)
    return bytes(text)


def inserted_bytes(p: Payload, rng: random.Random) -> bytes:
    text = dumps(p)
    position = rng.randrange(len(text) + 1)
    return text[:position] + rng.randbytes(rng.randrange(1, 8)) + text[position:]


def deleted_span(p: Payload, rng: random.Random) -> bytes:
    text = dumps(p)
    start = rng.randrange(len(text))
    return text[:start] + text[start + rng.randrange(1, 10):]


def invalid_utf8(p: Payload, rng: random.Random) -> bytes:
    return dumps({**p, rng.choice(list(p) or ["x"]): "@@"}).replace(
        b"@@", rng.choice([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x80abc"]))


def trailing_garbage(p: Payload, rng: random.Random) -> bytes:
    return dumps(p) + rng.choice([b"x", b" }", b"{}", b"\n" + dumps(p), b"\x00"])


RAW_MUTATIONS: list[Callable[[Payload, random.Random], bytes]] = [
    duplicate_key, deep_nesting, not_an_object, truncated, flipped_byte, flipped_byte,
    inserted_bytes, deleted_span, invalid_utf8, trailing_garbage]


class Fuzzer:
    """``messages(n)``: ``n`` messages from ``valid(i, rng)`` payloads; about one in six is
    left valid, the rest are mutated, replaced by random bytes or emptied."""

    def __init__(self, valid: Callable[[int, random.Random], Payload], seed: int) -> None:
        self.valid = valid
        self.rng = random.Random(seed)

    def message(self, i: int) -> Message:
        rng = self.rng
        payload = self.valid(i, rng)
        key = str(payload.get("user_id", i)).encode()
        roll = rng.random()
        if roll < 0.17:
            return Message(key, dumps(payload), "valid")
        if roll < 0.60:
            names = []
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                mutate = rng.choice(JSON_MUTATIONS)
                payload = mutate(payload, rng)
                names.append(mutate.__name__)
            return Message(key, dumps(payload), "+".join(names))
        if roll < 0.92:
            mutate_raw = rng.choice(RAW_MUTATIONS)
            return Message(key, mutate_raw(payload, rng), mutate_raw.__name__)
        if roll < 0.97:
            return Message(rng.choice([None, rng.randbytes(4)]),
                           rng.randbytes(rng.randrange(0, 300)), "random_bytes")
        return Message(key, rng.choice([b"", None]), "empty_or_tombstone")

    def messages(self, n: int) -> Iterator[Message]:
        return (self.message(i) for i in range(n))


# --- oracles ---------------------------------------------------------------------------------


def as_json_object(value: bytes | None) -> Payload | None:
    """The message as any consumer reads JSON (strict UTF-8, one value and nothing after
    it), or None when it is not a JSON object."""
    try:
        parsed = json.loads(value) if value else None
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def rating_row(value: bytes | None) -> tuple[int, int] | None:
    """The Cassandra key (user_id, movie_id) an accepted rating or tag event is stored under."""
    event = as_json_object(value)
    if event is None or not (is_int(event.get("user_id")) and is_int(event.get("movie_id"))):
        return None
    return event["user_id"], event["movie_id"]


def as_stored(text: str) -> str:
    """A string as it comes back from the JVM (which writes a lone surrogate as '?')."""
    return text.encode("utf-8", "replace").decode()


def request_id(value: bytes | None) -> str | None:
    """The request id a prediction for an accepted request carries."""
    request = as_json_object(value)
    rid = None if request is None else request.get("request_id")
    return as_stored(rid) if isinstance(rid, str) else None
