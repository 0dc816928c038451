"""Start-up hook of the Python processes the Spark JVM launches: load pyspark from cached bytecode.

Spark puts `$SPARK_HOME/python/lib/pyspark.zip` and py4j's zip first on the PYTHONPATH of every
Python process it starts (the worker daemon and its forked workers, the data-source lookup,
create and planning daemons, the streaming source process). With pip's pyspark, SPARK_HOME is
the installed package, and the zips hold the same files as site-packages; but zipimport cannot
cache bytecode, so each of those ~9 processes compiled pyspark from source at every start
(issue 17: `import pyspark.worker` costs 0.55 CPU-s from the zip, 0.16 s from site-packages).

`spark.session.build_session` puts this folder on the PYTHONPATH the JVM hands on; Python
imports the first `sitecustomize` on sys.path once PYTHONPATH is on it, before the main module.
This one drops the zips that ship inside the importable pyspark package (py4j's only when the
installed py4j is the zip's version): the same modules then load from site-packages. A zip of
another Spark installation stays. A `sitecustomize` further down sys.path still runs.
"""

from __future__ import annotations

import os
import sys


def bundled_zips(path: list[str]) -> set[str]:
    """Entries of `path` that are pyspark's own copies of importable site-packages modules."""
    real = {os.path.realpath(p) for p in path if p}
    drop = set()
    for entry in path:
        lib = os.path.dirname(os.path.realpath(entry)) if entry.endswith(".zip") else ""
        package = os.path.dirname(os.path.dirname(lib))  # <site>/pyspark from <site>/pyspark/python/lib
        site = os.path.dirname(package)
        if os.path.basename(package) != "pyspark" or site not in real:
            continue
        if not os.path.isfile(os.path.join(package, "__init__.py")):
            continue
        name = os.path.basename(entry)
        if name == "pyspark.zip":
            drop.add(entry)
        elif name.startswith("py4j-") and name.endswith("-src.zip"):
            version = name[len("py4j-") : -len("-src.zip")]
            if os.path.isdir(os.path.join(site, f"py4j-{version}.dist-info")):
                drop.add(entry)
    return drop


def _run_next_sitecustomize() -> None:
    """The sitecustomize this one shadows, if any (e.g. a distribution's own)."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.realpath(__file__))
    rest = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_drop = bundled_zips(sys.path)
sys.path[:] = [p for p in sys.path if p not in _drop]
for _entry in _drop:  # else importlib.invalidate_caches() (pyspark's setup_spark_files) re-reads the zip's index
    sys.path_importer_cache.pop(_entry, None)
_run_next_sitecustomize()
