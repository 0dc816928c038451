"""spark.supervisor: how the streaming job starts, restarts and stops its queries.

`ScriptedQuery` stands in for pyspark's StreamingQuery (the four members the
supervisor reads: awaitTermination, isActive, exception, lastProgress, recentProgress, stop): a
real query cannot be made to fail on cue here. The job's real queries run in
tests/test_spark_job.py.
"""

from __future__ import annotations

import threading

from spark.supervisor import QuerySupervisor


class ScriptedQuery:
    """A query whose life is a script: each awaitTermination advances one step.

    Steps: "run" (active, no batch yet), "idle" (active, a batch without input rows),
    "batch" (active, a batch read rows), "done" (ended cleanly), "fail" (ended with an exception)."""

    def __init__(self, script: list[str]):
        self.script = list(script)
        self.state = "run"
        self.stopped = False
        self.lastProgress = None
        self.recentProgress = []

    def awaitTermination(self, timeout):
        if self.script and not self.stopped:
            self.state = self.script.pop(0)
            if self.state in ("batch", "idle"):
                rows = 10 if self.state == "batch" else 0
                self.lastProgress = {"batchId": len(self.recentProgress), "numInputRows": rows}
                self.recentProgress.append(self.lastProgress)

    @property
    def isActive(self):
        return not self.stopped and self.state in ("run", "idle", "batch")

    def exception(self):
        return RuntimeError("batch failed: database is locked") if self.state == "fail" else None

    def stop(self):
        self.stopped = True


def starter(scripts: list[list[str]], started: list):
    """A starter handing out one scripted query per (re)start."""

    def start(available_now: bool):
        q = ScriptedQuery(scripts.pop(0))
        started.append(q)
        return q

    return start


def test_a_failed_query_is_restarted_in_continuous_mode_and_its_backoff_resets_after_a_batch():
    stop = threading.Event()
    started = []
    # fail twice, then the third start completes a batch; the test stops the job after it
    scripts = [["fail"], ["run", "fail"], ["run", "batch", "batch"]]
    sup = QuerySupervisor({"metrics": starter(scripts, started)}, available_now=False, stop=stop, restart_after=0.001)
    failures_seen = []

    def beat():
        failures_seen.append(sup.backoffs["metrics"].failures)
        if started[-1].lastProgress is not None:
            stop.set()

    sup.heartbeat, sup.heartbeat_every = beat, 0.0
    assert sup.run(eager=["metrics"]) == 0
    assert len(started) == 3, "each failure restarts the query from its checkpoint"
    assert max(failures_seen) == 2 and failures_seen[-1] == 0, "failures in a row, reset by the first batch"
    assert started[-1].stopped, "a stop stops the running query"


def test_in_available_now_mode_a_failure_is_exit_1_without_a_restart_and_the_others_finish_their_work():
    stop = threading.Event()
    started = []
    starters = {
        "metrics": starter([["run", "fail"]], started),
        "dead_letters": starter([["run", "run", "run", "done"]], started),
    }
    sup = QuerySupervisor(starters, available_now=True, stop=stop, restart_after=0.001)
    assert sup.run(eager=["metrics", "dead_letters"]) == 1
    assert len(started) == 2, "no restart in available-now mode"
    assert started[1].state == "done" and not started[1].stopped, "the other query wrote what it had"


def test_available_now_ends_with_0_once_every_query_finished():
    started = []
    starters = {"metrics": starter([["run", "done"]], started), "logs": starter([["done"]], started)}
    sup = QuerySupervisor(starters, available_now=True, stop=threading.Event(), arrived=lambda name: True)
    assert sup.run(eager=["metrics"], lazy=["logs"]) == 0
    assert len(started) == 2 and not any(q.stopped for q in started)


def test_a_lazy_query_starts_once_its_records_arrived_and_a_probe_error_only_delays_it():
    stop = threading.Event()
    started = []
    answers = [False, RuntimeError("broker away"), True]

    def arrived(name):
        answer = answers.pop(0) if answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer

    def beat():
        if len(started) == 2:
            stop.set()

    starters = {"metrics": starter([["run"] * 1000], started), "logs": starter([["run"] * 1000], started)}
    sup = QuerySupervisor(
        starters, available_now=False, stop=stop, arrived=arrived, heartbeat=beat, heartbeat_every=0.0
    )
    assert sup.run(eager=["metrics"], lazy=["logs"]) == 0
    assert len(started) == 2 and answers == [], "started on the third question, after a no and an error"
    assert all(q.stopped for q in started)


def test_in_available_now_mode_a_query_without_records_is_not_waited_for():
    started = []
    starters = {"metrics": starter([["done"]], started), "logs": starter([["done"]], started)}
    sup = QuerySupervisor(starters, available_now=True, stop=threading.Event(), arrived=lambda name: False)
    assert sup.run(eager=["metrics"], lazy=["logs"]) == 0
    assert len(started) == 1


def test_settled_is_called_once_every_started_query_read_rows_and_again_after_a_later_start():
    """The planner reaper's moment (spark.planners): not while a query has only had empty
    batches (its source may not be planned yet), once all have read rows; a restart or a lazy
    start makes it due again."""
    stop = threading.Event()
    started, settled_at = [], []
    metrics = [["run", "idle", "idle", "batch", "run", "run", "run", "fail"], ["run", "batch"] + ["run"] * 1000]
    starters = {"metrics": starter(metrics, started), "logs": starter([["run", "batch"] + ["run"] * 1000], started)}

    def settled():
        settled_at.append([q.recentProgress[-1]["numInputRows"] if q.recentProgress else None for q in started])

    def beat():
        if len(settled_at) >= 3:
            stop.set()

    sup = QuerySupervisor(
        starters,
        available_now=False,
        stop=stop,
        arrived=lambda name: bool(settled_at),  # the logs' records come after metrics settled
        heartbeat=beat,
        heartbeat_every=0.0,
        restart_after=0.001,
        settled=settled,
    )
    assert sup.run(eager=["metrics"], lazy=["logs"]) == 0
    assert len(started) == 3, "metrics, the lazily started logs query, metrics restarted"
    first, lazy, restarted = started
    assert first.recentProgress[:2] == [{"batchId": 0, "numInputRows": 0}, {"batchId": 1, "numInputRows": 0}]
    # once when metrics read rows (logs not yet started), once when the logs query read rows,
    # once when the restarted metrics query read rows: never while a started query had not
    assert settled_at[0] == [10]
    assert settled_at[1][1] == 10
    assert settled_at[2][2] == 10
    assert all(q.stopped for q in (lazy, restarted))


def test_a_failing_settled_hook_does_not_stop_the_job():
    stop = threading.Event()
    started = []

    def settled():
        stop.set()
        raise RuntimeError("no such process")

    sup = QuerySupervisor(
        {"metrics": starter([["batch"] + ["run"] * 1000], started)}, available_now=False, stop=stop, settled=settled
    )
    assert sup.run(eager=["metrics"]) == 0
    assert started[0].stopped
