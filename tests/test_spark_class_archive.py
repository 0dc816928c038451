"""The Spark JVM's class-data-sharing archive (spark.class_archive): named per install, passed
only when it exists, harmless when the JVM cannot use it, and mapped by this JVM once built."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from observability.settings import Settings
from spark import class_archive
from spark.session import spark_conf


def test_the_session_passes_the_archive_only_when_one_exists_for_this_install(tmp_path, monkeypatch):
    monkeypatch.setattr(class_archive, "ARCHIVE_DIR", tmp_path)
    assert class_archive.java_options() == ""
    assert "SharedArchiveFile" not in spark_conf(Settings())["spark.driver.extraJavaOptions"]
    (tmp_path / f"{class_archive.install_key()}.jsa").write_bytes(b"an archive")
    options = spark_conf(Settings())["spark.driver.extraJavaOptions"]
    assert f"-XX:SharedArchiveFile={tmp_path / class_archive.install_key()}.jsa -Xshare:auto" in options
    assert options.startswith("-Duser.timezone=UTC ")
    off = spark_conf(Settings(SPARK_CLASS_ARCHIVE=False, SPARK_JAVA_OPTIONS="-Dextra=1"))
    assert "SharedArchiveFile" not in off["spark.driver.extraJavaOptions"]
    assert off["spark.driver.extraJavaOptions"].endswith(" -Dextra=1")


def test_another_java_runtime_gets_another_archive(tmp_path, monkeypatch):
    default = class_archive.install_key()
    fake = tmp_path / "jdk"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "java").write_text("#!/bin/sh\n")
    monkeypatch.setenv("JAVA_HOME", str(fake))
    assert class_archive.java_binary() == (fake / "bin" / "java").resolve()
    assert class_archive.install_key() not in (None, default)


def test_a_damaged_archive_leaves_the_jvm_running_without_sharing_and_quiet(tmp_path, monkeypatch):
    monkeypatch.setattr(class_archive, "ARCHIVE_DIR", tmp_path)
    (tmp_path / f"{class_archive.install_key()}.jsa").write_bytes(b"\x00" * 4096)
    java = class_archive.java_binary()
    run = subprocess.run(
        [str(java), *shlex.split(class_archive.java_options()), "-version"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "sharing" not in run.stderr.splitlines()[-1]  # the VM line: "mixed mode", no class sharing
    assert "warning" not in run.stderr.lower() and "error" not in run.stderr.lower()


def test_the_archive_make_setup_built_is_mapped_by_this_jvm():
    path = class_archive.archive_path()
    if not path.is_file() and not os.environ.get("CI"):
        pytest.skip("no archive here: `make setup` (or python -m spark.class_archive) builds it; CI requires it")
    ok, why = class_archive.check()
    assert ok, why
    cli = subprocess.run([sys.executable, "-m", "spark.class_archive", "--check"], capture_output=True, text=True)
    assert cli.returncode == 0 and cli.stdout.startswith("spark class archive: usable: "), cli.stdout + cli.stderr
