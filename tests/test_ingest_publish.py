"""The receiver's publisher thread: group commit of the requests it expects, never before durable."""

from __future__ import annotations

import pytest

from ingest import publish
from ingest.publish import Publisher
from observability.transport.local_log import LocalLogProducer, LocalLogReader
from tests.otlp_fixtures import wait_for

TOPIC, DEAD = "spans", "dead"


class CountingProducer(LocalLogProducer):
    """The real local-log producer, counting its flushes."""

    flushes = 0

    def flush(self) -> None:
        super().flush()
        CountingProducer.flushes += 1


@pytest.fixture
def publisher(tmp_path, monkeypatch):
    # a long wait: a test finishes only because an expected request arrived or gave up, never by timing
    monkeypatch.setattr(publish, "GROUP_COMMIT_WAIT_S", 600.0)
    CountingProducer.flushes = 0
    pub = Publisher(lambda: CountingProducer(tmp_path, partitions=2), DEAD)
    yield pub
    pub.close()


def _records(tag: str, n: int = 5) -> list[tuple[str, bytes, bytes, int]]:
    return [(TOPIC, f"{tag}{i}".encode(), f"{tag}-{i}".encode(), 1_000 + i) for i in range(n)]


def _values(root) -> list[bytes]:
    reader = LocalLogReader(root)
    return sorted(r.value for p, end in reader.end_offsets(TOPIC).items() for r in reader.read(TOPIC, p, 0, end))


def test_a_job_waits_for_the_expected_request_and_both_share_one_flush(publisher, tmp_path):
    with publisher.expecting() as first, publisher.expecting() as second:
        done_first = publisher.publish(_records("a"), expected=first)
        wait_for(lambda: publisher.stats.group_waits == 1, 20, "the publisher holding the first job")
        assert not done_first.done()  # held for `second`, not flushed alone
        done_second = publisher.publish(_records("b"), expected=second)
    done_first.result(timeout=60)
    done_second.result(timeout=60)
    assert CountingProducer.flushes == 1
    assert _values(tmp_path) == sorted(v for _, _, v, _ in _records("a") + _records("b"))


def test_a_request_that_gives_up_releases_the_wait(publisher, tmp_path):
    with publisher.expecting() as first:
        with publisher.expecting():  # a request whose mapping fails: it never publishes
            done = publisher.publish(_records("a"), expected=first)
            wait_for(lambda: publisher.stats.group_waits == 1, 20, "the publisher holding the job")
        done.result(timeout=60)  # resolved once the other gave up, long before the 600 s wait
    assert CountingProducer.flushes == 1 and len(_values(tmp_path)) == 5


def test_a_lone_job_is_flushed_without_waiting(publisher, tmp_path):
    publisher.publish(_records("a")).result(timeout=60)  # nothing expected: no wait at all
    with publisher.expecting() as only:
        publisher.publish(_records("b"), expected=only).result(timeout=60)  # its own expectation closed
    assert CountingProducer.flushes == 2 and len(_values(tmp_path)) == 10
