"""The SparkSession: small, quiet, UTC, `local[2]` unless SPARK_MASTER says otherwise."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from observability.settings import Settings
from spark import class_archive

_CHECKPOINT_FILE_MANAGER = "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"


def spark_conf(settings: Settings, app_name: str = "observability-streaming") -> dict[str, str]:
    return {
        "spark.app.name": app_name,
        "spark.master": settings.spark_master,
        "spark.ui.enabled": str(bool(settings.spark_ui)).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.sql.session.timeZone": "UTC",
        # C1 only, serial GC: on 2 cores C2's compilations cost more CPU than they save over a
        # backlog run (measured: ~6 JVM CPU-s less per 1M-event run, issue 17), and one GC thread
        # with a small code cache keeps the JVM's RSS down. Spark's classes take ~140 MB of
        # metaspace: starting its GC threshold there saves four full collections at start-up.
        "spark.driver.extraJavaOptions": " ".join(
            filter(
                None,
                (
                    "-Duser.timezone=UTC -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=64m "
                    "-XX:MetaspaceSize=160m",
                    class_archive.java_options() if settings.spark_class_archive else "",
                    settings.spark_java_options,
                ),
            )
        ),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.warehouse.dir": str(settings.data_dir / "spark-warehouse"),
        "spark.sql.streaming.minBatchesToRetain": "20",
        "spark.sql.streaming.numRecentProgressUpdates": "20",
        "spark.sql.adaptive.enabled": "false",
        # The window aggregation (latency sketches) runs in an object hash map that falls back to
        # sorting every row once a task holds more than 128 groups, which a backlog range does
        # (30 windows x services x endpoints): measured ~1.5 JVM CPU-s less per 1M events at 4096.
        "spark.sql.objectHashAggregate.sortBased.fallbackThreshold": "4096",
        "spark.python.worker.reuse": "true",
        # Checkpoint files (offsets, commits, state deltas: all on the local disk under DATA_DIR)
        # through Hadoop's FileSystem API, not FileContext: FileContext's rename looks for
        # symlinks by running `readlink` in a child process, ~40 per micro-batch, each forked
        # from the JVM and briefly counted at its whole RSS (~0.7 GB) by a process-tree memory
        # sample (issue 17). A rename(2) on a local disk is atomic either way.
        "spark.sql.streaming.checkpointFileManagerClass": _CHECKPOINT_FILE_MANAGER,
        "spark.driver.host": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
        "spark.driver.bindAddress": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
    }


WORKER_SITE = Path(__file__).resolve().parent / "worker_site"


def worker_pythonpath(current: str) -> str:
    """`current` PYTHONPATH with the worker start-up hook and this repo's root in front (once)."""
    root = str(Path(__file__).resolve().parents[1])
    paths = [p for p in current.split(os.pathsep) if p]
    front = [p for p in (str(WORKER_SITE), root) if p not in paths]
    return os.pathsep.join([*front, *paths])


def build_session(settings: Settings, app_name: str = "observability-streaming", log_level: str = "ERROR"):
    """Create (or reuse) the session; Python workers run this interpreter."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Every timestamp is UTC: the JVM, the session and this process's local time.
    os.environ["TZ"] = "UTC"
    time.tzset()
    logging.getLogger("py4j").setLevel(logging.WARNING)
    # Python workers unpickle the data source classes from this repo, and start from pyspark's
    # cached bytecode instead of Spark's zip of it (spark/worker_site/sitecustomize.py).
    os.environ["PYTHONPATH"] = worker_pythonpath(os.environ.get("PYTHONPATH", ""))
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in spark_conf(settings, app_name).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(log_level)
    from spark.source import register

    register(spark)
    return spark
