"""The vectorised range parser (`spark.vector_parse`) gives the per-line validator's verdict on every line.

Same accepted rows (bronze columns, byte for byte), same rejects with the same reasons, on the
known kinds of bad line, on valid lines in unusual shapes and on fuzzed mutations of both."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from observability.transport.base import Record
from spark.staging import RangeParser
from spark.vector_parse import VectorParsedRange, derived_event_id
from tests.event_samples import BAD_LINES, NOW_MS, good_event, good_line
from tests.spark_fixtures import INVALID_LINES, make_events

TOPIC, PARTITION = "raw_events", 3


def _per_line(values: list[bytes], timestamps: list[int], wall_ms: int) -> RangeParser:
    parser = RangeParser(TOPIC)
    for k, v in enumerate(values):
        parser.add(Record(TOPIC, PARTITION, 100 + k, timestamps[k], None, v), wall_ms)
    return parser


def _assert_same(values: list[bytes], timestamps: list[int] | None = None, wall_ms: int = NOW_MS) -> VectorParsedRange:
    timestamps = timestamps or [NOW_MS] * len(values)
    offsets = [100 + k for k in range(len(values))]
    vector = VectorParsedRange(TOPIC, PARTITION, offsets, timestamps, values, wall_ms)
    expected = _per_line(values, timestamps, wall_ms)
    got_rows, want_rows = vector.valid_table().to_pylist(), expected.valid_table().to_pylist()
    assert len(got_rows) == len(want_rows)
    for k, (got, want) in enumerate(zip(got_rows, want_rows, strict=True)):
        assert got == want, (k, values[k][:300])
    assert vector.valid_offsets().to_pylist() == expected.valid_offsets().to_pylist()
    assert vector.rejects == expected.rejects
    assert vector.rejects_table().equals(expected.rejects_table())
    return vector


def test_known_bad_lines_get_the_same_verdict_and_reason():
    bad = [raw for _, raw, _ in BAD_LINES] + [raw for raw, _ in INVALID_LINES]
    values = [good_line(i) for i in range(5)] + bad + [good_line(i) for i in range(5, 10)]
    vector = _assert_same(values)
    assert len({kind for kind, _, _ in BAD_LINES}) >= 12
    assert len(vector.rejects) == len(bad)
    assert vector.vector_rows == 10  # the good lines took the vectorised path


def test_generated_events_take_the_vector_path_and_match_bronze():
    events = make_events(300, NOW_MS - 600_000, 600_000, seed=5)
    values = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    values[7] = json.dumps({k: v for k, v in events[7].items() if k != "event_id"}).encode()  # derived id
    vector = _assert_same(values)
    assert vector.fallback_rows == 0
    assert vector.valid_table().column("event_id")[7].as_py() == derived_event_id(TOPIC, PARTITION, 107)


UNUSUAL_VALID = [
    good_event(1, ts_ms=NOW_MS - 5, kind="SERVER", trace_id="AB" * 16, span_id="CD" * 8),
    good_event(2, endpoint="   ", event_id=None, attributes={}),
    good_event(3, endpoint=None, attributes={"n": 1.5e-7, "big": 1e16, "nested": {"a": [1, 2, None]}}),
    good_event(4, service=" padded ", timestamp="2024-02-29T23:59:59.123456Z"),
    good_event(5, timestamp="2024-01-01T00:00:00.1Z", latency_ms=0, error_message="é ünïcode ✓"),
    good_event(6, timestamp="2024-01-01 00:00:00+02:00", attributes={"k": "tab\tinside", "q": 'say "hi"'}),
    good_event(7, timestamp=1_700_000_000_123.9, latency_ms=-0.0),
    good_event(8, attributes={"dup": 1}, kind="consumer", parent_span_id="ab" * 8),
    good_event(9, timestamp="1970-01-01T00:00:00Z", status_code=599),
    good_event(10, timestamp="2024-01-01T00:00:00.999999Z", status_code=100, latency_ms=123456789),
]


def test_unusual_valid_lines_are_stored_exactly_as_the_per_line_path_stores_them():
    values = [json.dumps(e).encode() for e in UNUSUAL_VALID]
    values.append(b'{"timestamp":"2024-01-01T00:00:00Z","service":"a","status_code":200,"latency_ms":1,"service":"b"}')
    values.append(
        b'{"timestamp":"2024-01-01T00:00:00Z","service":"a","status_code":200,"latency_ms":1,'
        b'"attributes":{"k":1,"k":2}}'
    )
    values.append(b'  {"timestamp":"2024-01-01T00:00:00Z","service":"a","status_code":200,"latency_ms":1e2}\n')
    values.append(b'{"timestamp":"2024-01-01T00:00:00Z","service":"\\u00e9","status_code":200,"latency_ms":1}')
    vector = _assert_same(values)
    assert vector.valid_table().num_rows == len(values)


def test_unicode_escapes_get_the_per_line_verdict():
    """A backslash-u escape in a line (a lone surrogate among them) sends that line per line."""
    head = b'{"timestamp":"2024-01-01T00:00:00Z","status_code":200,"latency_ms":1,'
    values = [
        good_line(0),
        head + b'"service":"a\\ud800"}',  # a lone surrogate: Python's json keeps it, msgspec does not
        head + b'"service":"a","error_message":"\\ud83d\\ude00 pair"}',
        head + b'"service":"a","attributes":{"k":"\\u0041"}}',
        head + b'"service":"a","error_message":"a backslash \\\\ then u"}',
        good_line(1),
    ]
    vector = _assert_same(values)
    assert vector.fallback_rows >= 3


OTLP_ATTRIBUTES = [  # several keys, as every OTLP span's (resource, span and span.kind) carries
    b'{"service.name":"checkout","host.name":"n-1","http.route":"/pay","http.status_code":200,"span.kind":"server"}',
    b'{"a":1,"b":"x","a":2}',  # a repeated key: orjson keeps the last
    b'{"a":"x:1,","b":2,"a":null}',  # a repeat after a value holding ':' and ','
    b'{"url":"http://h:80/x,y?q=1","ok":true,"n":null,"z":0}',
    b'{"a":-0,"b":1}',  # -0: orjson writes 0
    b'{"a":-0}',
    b'{"k:1,":1,"k":2}',  # a key with ':' and ',' (the orjson way)
    b'{"k":1,"k:1,":2,"k":3}',
    b'{"a":1,"b":1.50}',  # a float: the orjson way
    b'{"a":1,"b":"\u00e9"}',
    b'{"\u00e9":1,"b":2}',
    b'{"a":1,"b":[1,2],"c":{"d":1}}',
    b'{"a":1, "b":2}',
    b'{"":1,"":2}',
    b'{"":1,"b":2}',
    b'{"a":"\u00e9","a":"\u00e9"}',
    b'{"a":123456789012345,"b":1234567890123456}',
]


def test_attributes_of_several_keys_are_stored_as_the_per_line_path_stores_them():
    head = b'{"timestamp":"2024-01-01T00:00:00Z","service":"a","status_code":200,"latency_ms":1,"attributes":'
    values = [head + a + b"}" for a in OTLP_ATTRIBUTES] * 3
    vector = _assert_same(values)
    assert vector.valid_table().num_rows == len(values)
    stored = vector.valid_table().column("attributes").to_pylist()
    assert stored[0] == OTLP_ATTRIBUTES[0].decode()  # kept as it came
    assert json.loads(stored[1]) == {"a": 2, "b": "x"} and json.loads(stored[4]) == {"a": 0, "b": 1}


def _mutations(rng: random.Random, line: bytes) -> bytes:
    """One random edit: a byte flipped, a token swapped for another JSON value, a cut, a splice."""
    choice = rng.randrange(6)
    pos = rng.randrange(len(line))
    if choice == 0:
        return line[:pos] + bytes([rng.randrange(256)]) + line[pos + 1 :]
    if choice == 1:
        return line[:pos]
    if choice == 2:
        return (
            line[:pos] + rng.choice([b",", b"}", b"]", b'"', b"\\", b" ", b"\n", b"NaN", b"-", b"1e999"]) + line[pos:]
        )
    ev = good_event(rng.randrange(100))
    field = rng.choice(list(ev))
    ev[field] = rng.choice(
        [
            None,
            True,
            0,
            -1,
            99,
            100,
            599,
            600,
            2**63,
            1.5,
            -0.5,
            "",
            " ",
            "x",
            "AbC",
            "12" * 8,
            "ab" * 16,
            "2024-13-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:60Z",
            "2024-01-01T00:00:00.1234567Z",
            "2024-01-01T00:00:00z",
            str(NOW_MS),
            NOW_MS + 86_400_000,
            NOW_MS + 86_400_001,
            "server",
            "CLIENT",
            "bogus",
            [],
            {},
            {"a": {"b": [1, "c"]}},
            {"service.name": "x", "http.status_code": 200, "span.kind": "server", "url": "h:1,2"},
            "\u2028",
        ]
    )
    if choice == 3:
        return json.dumps(ev).encode()
    if choice == 4:
        return json.dumps(ev, separators=(",", ":"), ensure_ascii=False).encode()
    del ev[field]
    return json.dumps(ev).encode()


@pytest.mark.parametrize("seed", range(3))
def test_fuzzed_lines_get_the_same_verdict(seed, monkeypatch):
    from spark import vector_parse

    if seed == 2:
        monkeypatch.setattr(vector_parse, "_CHUNK", 97)  # many chunks: positions and order across them
    rng = random.Random(seed)
    seeds = [good_line(i) for i in range(20)] + [raw for _, raw, _ in BAD_LINES if len(raw) < 10_000]
    head = b'{"timestamp":"2024-01-01T00:00:00Z","service":"a","status_code":200,"latency_ms":1,"attributes":'
    seeds += [head + a + b"}" for a in OTLP_ATTRIBUTES]
    values = [_mutations(rng, rng.choice(seeds)) for _ in range(1500)]
    timestamps = [rng.choice([NOW_MS, 0, -1, NOW_MS - 86_400_000]) for _ in values]
    vector = _assert_same(values, timestamps)
    assert vector.vector_rows > 100 and len(vector.rejects) > 100  # both paths were exercised


def test_sampling_bucket_is_md5_number_mod_10000():
    import duckdb

    from spark import side_outputs

    con = duckdb.connect()
    ids = [f"{random.Random(k).getrandbits(128):032x}" for k in range(2000)] + ["", "abc"]
    rows = con.execute(
        f"SELECT count(*) FROM (SELECT unnest(?) AS trace_id) WHERE {side_outputs._BUCKET} <> md5_number(trace_id) % 10000",
        [ids],
    ).fetchone()
    assert rows == (0,)


def test_read_values_is_read_as_columns(tmp_path):
    from observability.transport.base import TopicReader
    from observability.transport.local_log import LocalLogProducer, LocalLogReader

    with LocalLogProducer(tmp_path, partitions=1, segment_bytes=4096) as producer:  # several segments
        for i in range(300):
            producer.send("t", good_line(i), key=None if i % 3 else f"k{i}".encode())
        producer.flush()
    reader = LocalLogReader(tmp_path)
    for start, end in ((0, 300), (17, 230), (299, 300), (5, 5)):
        records = list(reader.read("t", 0, start, end))
        expected = ([r.offset for r in records], [r.timestamp_ms for r in records], [r.value for r in records])
        assert reader.read_values("t", 0, start, end) == expected
        assert TopicReader.read_values(reader, "t", 0, start, end) == expected  # the generic form
    assert len(reader.read_values("t", 0, 0, 300)[2]) == 300


def _check_in_child(queue) -> None:
    from spark import vector_parse

    queue.put(vector_parse._repeated_keys(pa.array(['{"a":1,"a":2}', '{"a":1,"b":2}'])).tolist())


def test_the_attribute_checks_work_in_a_forked_child_of_a_process_that_ran_them():
    """The checks' in-memory DuckDB stays open in the process; a forked child opens its own."""
    import multiprocessing

    from spark import vector_parse

    assert vector_parse._repeated_keys(pa.array(['{"a":1,"a":2}'])).tolist() == [True]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_check_in_child, args=(queue,))
    child.start()
    assert queue.get(timeout=60) == [True, False]
    child.join(timeout=60)
    assert child.exitcode == 0
