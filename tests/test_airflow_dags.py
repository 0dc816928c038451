"""The DAG files: they import cleanly, with the agreed ids, schedules and catchup off, and stay thin."""

from __future__ import annotations

import ast

import pytest

from tests.airflow_fixtures import DAG_IDS, DAGS_FOLDER

SCHEDULES = {"monitoring_dag": "*/5 * * * *", "data_quality_dag": "0 */6 * * *", "retraining_dag": "0 0 * * *"}
# What a DAG file may import at module level: parsing must stay fast and never touch the data.
TOP_LEVEL_IMPORTS = {"__future__", "datetime", "airflow.sdk"}


def test_dagbag_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(DAG_IDS)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_schedule_and_catchup(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    assert dag.timetable.expression == SCHEDULES[dag_id]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.fileloc == str(DAGS_FOLDER / f"{dag_id}.py")


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_files_import_only_airflow_at_module_level(dag_id):
    tree = ast.parse((DAGS_FOLDER / f"{dag_id}.py").read_text())
    modules = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            modules |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module)
    assert modules <= TOP_LEVEL_IMPORTS, modules - TOP_LEVEL_IMPORTS


def test_task_graphs(dagbag):
    mon = dagbag.get_dag("monitoring_dag")
    assert mon.get_task("fail_on_unhealthy").upstream_task_ids == {"check_components"}
    dq = dagbag.get_dag("data_quality_dag")
    assert dq.get_task("checkpoint").upstream_task_ids == {"apply_retention"}
    assert dq.get_task("apply_retention").upstream_task_ids == set()  # retention runs whatever validation found
    rt = dagbag.get_dag("retraining_dag")
    for model in ("isolation_forest", "transformer"):
        assert rt.get_task(f"promote_{model}").upstream_task_ids == {f"train_{model}", f"evaluate_{model}"}
