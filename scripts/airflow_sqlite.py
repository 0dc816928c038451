"""Keep Airflow's API server responsive on SQLite (installed by `scripts/airflow_local.py init`).

Only for the local runner (`make local`, SQLite); compose runs PostgreSQL and needs none of this.

Airflow 3.3's audit-log dependency (`action_logging`, on every POST/PATCH of the
public API) is an `async def` that commits a *synchronous* SQLAlchemy session, so
the commit runs on the API server's event loop. On SQLite, when another
connection holds the write lock, that commit waits in SQLite's busy handler,
up to the busy timeout, with the whole event loop blocked. If the holder is a
request of the same server whose session teardown needs the loop, nothing moves
until the timeout ends: triggering a DAG run then failed after 30 s with "database
is locked", and task workers' state updates with it (seen in CI). PostgreSQL
(compose) does not take a file-wide write lock, so this only matters here.

The fix keeps Airflow's function and runs its commit in the thread pool. Airflow
loads `$AIRFLOW_HOME/config/airflow_local_settings.py` into every process it
starts, and that file calls `install()`. `install()` patches the module as soon
as it is imported, so the routes bind the patched dependency.

The patch is written for one Airflow release and one text of the function it
wraps: on any other it logs a warning and patches nothing (the API then works
as upstream, with the freeze), and `tests/test_airflow_local.py` fails, so an
upgrade is a deliberate step (re-read the function, update the two constants).
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's annotations at runtime.
import hashlib
import importlib.abc
import inspect
import logging
import sys

TARGET = "airflow.api_fastapi.logging.decorators"
WRITTEN_FOR_AIRFLOW = "3.3.2"
# sha256 of `inspect.getsource(action_logging)` in that release
ACTION_LOGGING_SHA256 = "bf1b492080fc1a06798683e580706db1aac6af2c019b8c70c1f42317fe2cc8d0"


def source_digest(function) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def patch_applies(module) -> str | None:
    """None when this patch fits the loaded Airflow; otherwise why not."""
    import airflow

    if airflow.__version__ != WRITTEN_FOR_AIRFLOW:
        return f"Airflow {airflow.__version__}, the patch is for {WRITTEN_FOR_AIRFLOW}"
    if source_digest(module.action_logging) != ACTION_LOGGING_SHA256:
        return "action_logging's source differs from the one the patch was written for"
    return None


def install() -> None:
    """Patch `action_logging` now if Airflow's module is loaded, else when it is imported."""
    if TARGET in sys.modules:
        _patch(sys.modules[TARGET])
    elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _patch(module)


class _CommitLater:
    """The request's session, except that `commit()` is only noted (done off the loop after)."""

    def __init__(self, session) -> None:
        self._session = session
        self.commit_requested = False

    def commit(self) -> None:
        self.commit_requested = True

    def __getattr__(self, name):
        return getattr(self._session, name)


def _patch(module) -> None:
    original = module.action_logging
    if getattr(original, "commits_off_event_loop", False):
        return
    why_not = patch_applies(module)
    if why_not is not None:
        logging.getLogger(__name__).warning("airflow_sqlite: not patching action_logging: %s", why_not)
        return
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    session_dep, user_dep = module.SessionDep, module.GetUserDep

    def action_logging(event=None):
        log_action = original(event)

        async def log_action_off_loop(request: Request, session: session_dep, user: user_dep):
            deferred = _CommitLater(session)
            await log_action(request=request, session=deferred, user=user)
            if deferred.commit_requested:
                await run_in_threadpool(session.commit)

        return log_action_off_loop

    action_logging.commits_off_event_loop = True
    module.action_logging = action_logging
