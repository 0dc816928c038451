"""The Nezha loader: a few CSV rows in Nezha's layout -> exactly the platform events expected."""

from __future__ import annotations

import json
from datetime import datetime

from anomaly_detection.evaluation import nezha
from observability.schema import validate_event

HEADER = "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration\n"
LOG_HEADER = "Timestamp,TimeUnixNano,Node,PodName,Container,TraceID,SpanID,Log\n"
T0 = 1675079460  # 2023-01-30 11:51:00 UTC
GW, TR = "ts-gateway-service-6f6cfc45b-d9pnv", "ts-travel-service-64469b5b48-5rjvb"
TA, TB = "a" * 32, "b" * 32


def ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def span(trace, sid, parent, pod, op, start_s, dur_ms):
    return f"{trace},{sid},{parent},{pod},{op},{ns(start_s)},{ns(start_s + dur_ms / 1000)},{int(dur_ms * 1000)}\n"


def write_day(tmp_path):
    day = tmp_path / "rca_data" / "2023-01-30"
    (day / "trace").mkdir(parents=True)
    (day / "log").mkdir()
    # Block of files 11_51..11_53: the recording starts at 11:50:53 (7 s of minute 11:50: dropped).
    early = span("c" * 32, "7" * 16, "root", GW, "/*", T0 - 7, 10.0)
    (day / "trace" / "11_51_trace.csv").write_text(
        HEADER
        + early
        + span(TA, "1111111111111111", "root", GW, "/*", T0 + 5, 100.0)
        + span(TA, "2222222222222222", "1111111111111111", GW, "HTTP POST", T0 + 5.001, 98.0)
        + span(TA, "3333333333333333", "2222222222222222", TR, "/api/v1/travelservice/trips/left", T0 + 5.002, 96.5)
        + span(TA, "4444444444444444", "3333333333333333", TR, "TripRepository.findAll", T0 + 5.003, 20.25)
    )
    (day / "trace" / "11_52_trace.csv").write_text(
        HEADER + span(TB, "5555555555555555", "root", TR, "/api/v1/x", T0 + 65, 5.0)
    )
    (day / "trace" / "11_53_trace.csv").write_text(
        HEADER + span("d" * 32, "6666666666666666", "root", TR, "/api/v1/x", T0 + 172, 5.0)
    )
    log = json.dumps(
        {
            "log": f"19:51:05.010 ERROR t.s.TravelServiceImpl#51 TraceID: {TA} SpanID: 3333333333333333 [getTickets][route not found]\n"
        }
    )
    info = json.dumps({"log": f"19:52:05.010 INFO  t.s.X#1 TraceID: {TB} SpanID: 5555555555555555 fine\n"})
    (day / "log" / "11_51_log.csv").write_text(
        LOG_HEADER
        + f'2023-01-30T11:51:05Z,1,n,{TR},server,{TA},3333333333333333,"{log.replace(chr(34), chr(34) * 2)}"\n'
        + f'2023-01-30T11:52:05Z,1,n,{TR},server,{TB},5555555555555555,"{info.replace(chr(34), chr(34) * 2)}"\n'
    )
    (day / "2023-01-30-fault_list.json").write_text(
        json.dumps(
            {
                "11": [
                    {
                        "inject_time": "2023-01-30 11:51:46",
                        "inject_timestamp": "1",
                        "inject_pod": TR,
                        "inject_type": "network_delay",
                    }
                ]
            }
        )
    )
    return day


def test_service_of_drops_the_replicaset_hash_and_pod_suffix():
    assert nezha.service_of("ts-basic-service-5dc8d4f9fd-llznp") == "ts-basic-service"
    assert nezha.service_of(GW) == "ts-gateway-service"


def test_rows_become_exact_events(tmp_path):
    day = write_day(tmp_path)
    events = [e for batch in nezha.day_events(day) for e in batch]
    by_span = {e["span_id"]: e for e in events}
    # the 7-second partial minute 11:50 is dropped; 11:51, 11:52 (whole) and 11:53 (52 s of 60) stay
    assert "7" * 16 not in by_span
    assert sorted(by_span) == [
        "1111111111111111",
        "2222222222222222",
        "3333333333333333",
        "4444444444444444",
        "5555555555555555",
        "6666666666666666",
    ]
    root, client, server, internal = (by_span[k * 16] for k in "1234")
    assert root == {
        "event_id": nezha._event_id(TA, "1111111111111111"),
        "timestamp": "2023-01-30T11:51:05.000Z",
        "service": "ts-gateway-service",
        "endpoint": "/*",
        "status_code": 200,
        "latency_ms": 100.0,
        "trace_id": TA,
        "span_id": "1111111111111111",
        "parent_span_id": None,
        "error_message": None,
        "attributes": {"pod": GW},
        "kind": "server",
    }
    assert (client["kind"], client["parent_span_id"]) == ("client", "1111111111111111")
    assert (server["service"], server["kind"], server["endpoint"]) == (
        "ts-travel-service",
        "server",
        "/api/v1/travelservice/trips/left",
    )
    assert (server["status_code"], server["error_message"]) == (500, "[getTickets][route not found]")
    assert (internal["kind"], internal["status_code"], internal["latency_ms"]) == ("internal", 200, 20.25)
    assert by_span["5" * 16]["status_code"] == 200  # an INFO line is no error
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    for e in events:  # every event passes the platform's own validation
        validate_event(e, now_ms=int(datetime(2026, 1, 1).timestamp() * 1000))


def test_faults_are_read_on_the_traces_clock(tmp_path):
    day = write_day(tmp_path)
    (f,) = nezha.read_faults(day)
    assert (f.start, f.end, f.service, f.fault_type) == (
        datetime(2023, 1, 30, 11, 51, 46),
        datetime(2023, 1, 30, 11, 54, 46),
        "ts-travel-service",
        "network_delay",
    )


def test_write_jsonl_reports_count_and_range(tmp_path):
    day = write_day(tmp_path)
    n, first, last = nezha.write_jsonl(nezha.day_events(day), tmp_path / "e.jsonl")
    lines = (tmp_path / "e.jsonl").read_text().splitlines()
    assert n == len(lines) == 6
    assert first == datetime(2023, 1, 30, 11, 51, 5) and last == datetime(2023, 1, 30, 11, 53, 52)
