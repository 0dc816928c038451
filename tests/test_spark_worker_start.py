"""What a Spark Python process costs to start (issue 17): pyspark from cached bytecode, not
Spark's zip of it; the source worker's modules without pandas; no child process to find libc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from observability import memory
from spark.session import worker_pythonpath

ROOT = Path(__file__).resolve().parents[1]


def _worker_site():
    """spark/worker_site/sitecustomize.py under another name (the folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("worker_sitecustomize", ROOT / "spark/worker_site/sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spark_worker_pythonpath() -> str:
    """PYTHONPATH as Spark's PythonWorkerFactory builds it: $SPARK_HOME/python/lib zips first."""
    import pyspark

    lib = Path(pyspark.__file__).parent / "python" / "lib"
    zips = [str(lib / "pyspark.zip"), *map(str, sorted(lib.glob("py4j-*-src.zip")))]
    assert Path(zips[0]).is_file() and len(zips) == 2, zips
    return ":".join([*zips, worker_pythonpath(str(ROOT))])


def _run(code: str, pythonpath: str) -> str:
    env = {"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_spark_python_process_imports_pyspark_from_site_packages():
    out = _run(
        "import sys, pyspark, py4j; print(pyspark.__file__); print(py4j.__file__); "
        "print(any(p.endswith('.zip') and '/pyspark/python/lib/' in p for p in sys.path)); "
        "print(any(p.endswith('.zip') and '/pyspark/python/lib/' in p for p in sys.path_importer_cache))",
        _spark_worker_pythonpath(),
    ).split()
    assert ".zip" not in out[0] and out[0].endswith("pyspark/__init__.py")
    assert ".zip" not in out[1] and out[1].endswith("py4j/__init__.py")
    assert out[2:] == ["False", "False"]  # nor a zipimporter left for importlib.invalidate_caches() to re-read


def test_bundled_zips_drops_only_the_installed_packages_own_copies(tmp_path):
    site = tmp_path / "site"
    lib = site / "pyspark" / "python" / "lib"
    lib.mkdir(parents=True)
    (site / "pyspark" / "__init__.py").write_text("")
    (site / "py4j-0.10.9.9.dist-info").mkdir()
    own, py4j_same, py4j_other = lib / "pyspark.zip", lib / "py4j-0.10.9.9-src.zip", lib / "py4j-0.10.9.8-src.zip"
    other_home = tmp_path / "spark-home" / "python" / "lib" / "pyspark.zip"
    path = [str(own), str(py4j_same), str(py4j_other), str(other_home), str(site)]
    bundled_zips = _worker_site().bundled_zips
    assert bundled_zips(path) == {str(own), str(py4j_same)}
    # the package is not importable from this sys.path: its zip is the only pyspark there
    assert bundled_zips([str(own), str(py4j_same)]) == set()


def test_source_worker_modules_do_not_import_pandas():
    out = _run(
        "import sys, spark.source, spark.staging, spark.side_outputs, spark.vector_parse, spark.dedupe; "
        "print('pandas' in sys.modules)",
        str(ROOT),
    )
    assert out.strip() == "False"


def test_release_memory_starts_no_child_process(monkeypatch):
    started = []
    popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(args[0] if args else kwargs.get("args"))
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    memory._libc.cache_clear()
    try:
        memory.release_memory(gc_generation=1)
        memory.release_memory()
        libc = memory._libc()
    finally:
        memory._libc.cache_clear()
    assert started == []
    if sys.platform.startswith("linux"):
        assert libc is not None and hasattr(libc, "malloc_trim")


def test_gc_paused_restores_the_collectors_state_even_on_an_error():
    import gc

    assert gc.isenabled()
    try:
        with memory.gc_paused():
            assert not gc.isenabled()
            raise ValueError("inside")
    except ValueError:
        pass
    assert gc.isenabled(), "enabled again after an exception"
    gc.disable()
    try:
        with memory.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "a collector paused by someone else stays paused"
    finally:
        gc.enable()
