"""Spark's JVM classes mapped from a class-data-sharing archive: ~4 CPU-s less per job start.

Why (issue 17): the Spark JVM loads ~16,000 classes before its first micro-batch, reading,
parsing and verifying each; on 2 cores that was ~9-12 of a 1M-event backlog run's ~30 CPU-s.
The JDK's application class-data sharing (AppCDS) maps them, already parsed and verified, from
an archive file instead: 5.7-7.4 JVM CPU-s per such run against 9.4-12.3 without (three
interleaved pairs, 2026-12-03).

`make setup` builds it (`python -m spark.class_archive`, about a minute, once per machine): a
short `--available-now` run over generated events records the classes the job loads
(`-XX:DumpLoadedClassList`) and the class path Spark gave its JVM, then `java -Xshare:dump`
writes the archive to `.cache/spark-classes/<key>.jsa`, the key naming the Java runtime and
the Spark install, so another JDK or pyspark gets an archive of its own. `spark.session` passes
it (`-XX:SharedArchiveFile`) when it exists; a JVM that cannot map it (a different class path,
say jars added to Spark's; a damaged file) runs without sharing, as it did before
(`-Xshare:auto`, with its class-sharing log off). `SPARK_CLASS_ARCHIVE=false` leaves it out;
`python -m spark.class_archive --check` says whether this JVM maps it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE_DIR = ROOT / ".cache" / "spark-classes"
RUNTIME_OPTIONS = ("-Xshare:auto", "-Xlog:cds=off", "-Xlog:cds+dynamic=off")
# the recording run: ~40,000 events of generated traffic, enough for every stage of a batch
RECORD_RATE, RECORD_SECONDS = "100", "120"


def java_binary() -> Path | None:
    """The `java` Spark's launcher runs: $JAVA_HOME/bin/java, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).exists() else None


def _spark_home() -> Path | None:
    spec = importlib.util.find_spec("pyspark")
    return Path(spec.origin).resolve().parent if spec and spec.origin else None


def _stamp(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path}:-"
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def install_key() -> str | None:
    """Names the Java runtime and the Spark install an archive was built for (None: no java)."""
    java, spark = java_binary(), _spark_home()
    if java is None or spark is None:
        return None
    jars = spark / "jars"
    names = sorted(os.listdir(jars)) if jars.is_dir() else []
    parts = [_stamp(java), _stamp(java.parent.parent / "lib" / "server" / "libjvm.so"), str(spark), *names]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def archive_path() -> Path | None:
    key = install_key()
    return None if key is None else ARCHIVE_DIR / f"{key}.jsa"


def java_options() -> str:
    """The JVM options that map the archive, or "" when there is none for this install."""
    path = archive_path()
    if path is None or not path.is_file():
        return ""
    option = f"-XX:SharedArchiveFile={path}"
    if any(c.isspace() for c in option):
        option = f'"{option}"'  # Spark splits extraJavaOptions as a shell would
    return " ".join((option, *RUNTIME_OPTIONS))


def _job_class_path(proc: subprocess.Popen) -> str | None:
    """The `-cp` of the Spark JVM under the job process, read while the job runs."""
    import psutil

    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for child in root.children(recursive=True):
                argv = child.cmdline()
                if argv and argv[0].endswith("java") and "org.apache.spark.deploy.SparkSubmit" in argv:
                    return argv[argv.index("-cp") + 1] if "-cp" in argv else None
        except psutil.Error:
            pass
        time.sleep(0.2)
    return None


def _record(work: Path, classes: Path) -> str:
    """Run the job once over generated events with the class list on; its JVM's class path."""
    env = dict(os.environ)
    env.pop("DUCKDB_PATH", None)
    env.update(
        DATA_DIR=str(work / "data"),
        TRANSPORT="local",
        LOG_LEVEL="WARNING",
        SPARK_CLASS_ARCHIVE="false",
        SPARK_JAVA_OPTIONS=f"-XX:DumpLoadedClassList={classes}",
        PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH")))),
    )
    generate = [sys.executable, "-m", "event_generator", "--rate", RECORD_RATE, "--duration", RECORD_SECONDS]
    subprocess.run([*generate, "--speed", "max", "--seed", "1"], cwd=ROOT, env=env, check=True, capture_output=True)
    job = subprocess.Popen(
        [sys.executable, "-m", "spark.streaming_job", "--available-now"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    class_path = _job_class_path(job)
    _, err = job.communicate()
    if job.returncode != 0:
        raise RuntimeError(f"the recording run failed (rc {job.returncode}):\n{err[-3000:]}")
    if not class_path or not classes.is_file():
        raise RuntimeError("the recording run's JVM gave no class path or class list")
    return class_path


def _maps(java: Path, archive: Path, class_path: str) -> bool:
    """Whether this JVM maps the archive with that class path (-Xshare:on fails otherwise)."""
    probe = [str(java), "-Xshare:on", f"-XX:SharedArchiveFile={archive}", "-cp", class_path, "-version"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def build() -> Path:
    """Record the job's classes, dump the archive, check this JVM maps it, put it in place."""
    java, key = java_binary(), install_key()
    if java is None or key is None:
        raise RuntimeError("no java (or no pyspark) to build a class archive for")
    ARCHIVE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spark-classes-") as tmp:
        work = Path(tmp)
        classes = work / "classes.lst"
        class_path = _record(work, classes)
        staged = ARCHIVE_DIR / f".{key}.jsa.tmp"
        dump = [str(java), "-Xshare:dump", f"-XX:SharedClassListFile={classes}", f"-XX:SharedArchiveFile={staged}"]
        done = subprocess.run([*dump, "-cp", class_path], capture_output=True, text=True)
        if done.returncode != 0 or not _maps(java, staged, class_path):
            staged.unlink(missing_ok=True)
            raise RuntimeError(f"java -Xshare:dump gave no usable archive:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        for old in (*ARCHIVE_DIR.glob("*.jsa"), *ARCHIVE_DIR.glob("*.classpath")):  # an earlier JDK's or Spark's
            old.unlink(missing_ok=True)
        (ARCHIVE_DIR / f"{key}.classpath").write_text(class_path)
        final = ARCHIVE_DIR / f"{key}.jsa"
        os.replace(staged, final)
        return final


def check() -> tuple[bool, str]:
    """(usable, why): the archive exists for this install and this JVM maps it."""
    java, path = java_binary(), archive_path()
    if java is None or path is None:
        return False, "no java or pyspark"
    if not path.is_file():
        return False, f"no archive at {path} (make setup builds it)"
    recorded = path.with_suffix(".classpath")
    if not recorded.is_file():
        return False, f"{recorded} is missing"
    if not _maps(java, path, recorded.read_text()):
        return False, f"{java} cannot map {path}"
    return True, f"{path} ({path.stat().st_size / 1e6:.0f} MB) maps in {java}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spark.class_archive", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether this JVM maps the archive")
    args = parser.parse_args(argv)
    if args.check:
        ok, why = check()
        print(f"spark class archive: {'usable' if ok else 'not usable'}: {why}")
        return 0 if ok else 1
    t0 = time.monotonic()
    try:
        path = build()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"spark class archive: not built ({exc}); the Spark job runs without it", file=sys.stderr)
        return 1
    print(f"spark class archive: {path} ({path.stat().st_size / 1e6:.0f} MB, built in {time.monotonic() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
