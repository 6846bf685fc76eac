"""Running real DAGs in tests, on Airflow 2.11 and 3.x alike."""

from __future__ import annotations

import inspect
from datetime import datetime, timezone
from typing import Any


def run_dag(dag: Any, logical_date: datetime | None, **kwargs: Any) -> Any:
    """``dag.test()`` for one logical date; returns the DagRun (``test_started_at``: when it was asked for)."""
    started = datetime.now(timezone.utc)
    dag_run = _test(dag, logical_date, **kwargs)
    dag_run.test_started_at = started
    return dag_run


def _test(dag: Any, logical_date: datetime | None, **kwargs: Any) -> Any:
    """Airflow 2 calls the logical date ``execution_date``."""
    if "logical_date" in inspect.signature(dag.test).parameters:
        return dag.test(logical_date=logical_date, **kwargs)
    # Airflow 2's dag.test() does not write the DAG to the database; the scheduler would, and
    # that is what registers its datasets, without which no dataset event is recorded.
    dag.sync_to_db()
    # A failed run touches DagRunNote, whose user foreign key needs the FAB user table mapped.
    import airflow.providers.fab.auth_manager.models  # noqa: F401

    return dag.test(execution_date=logical_date, **kwargs)


def xcom_value(dag_run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """What ``task_id`` pushed under ``key`` in ``dag_run``, read back from the metadata database."""
    try:
        from airflow.models.xcom import XComModel
    except ImportError:  # Airflow 2
        from airflow.models.xcom import XCom

        return XCom.get_one(run_id=dag_run.run_id, dag_id=dag_run.dag_id, task_id=task_id, key=key, map_index=map_index)
    query = XComModel.get_many(
        run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key=key, map_indexes=map_index
    )
    row = query.first() if hasattr(query, "first") else _first_row(query)
    return None if row is None else XComModel.deserialize_value(row)


def _first_row(statement: Any) -> Any:
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalars(statement).first()


def task_states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def asset_event_extras(dag_run: Any, name: str) -> list[dict[str, Any]]:
    """The ``extra`` of each asset (Airflow 2: dataset) event that ``dag_run`` emitted for ``name``."""
    from airflow.utils.session import create_session

    try:
        from airflow.models.asset import AssetEvent, AssetModel

        event, model, key = AssetEvent, AssetModel, AssetEvent.asset_id
    except ImportError:  # Airflow 2
        from airflow.models.dataset import DatasetEvent, DatasetModel

        event, model, key = DatasetEvent, DatasetModel, DatasetEvent.dataset_id
    with create_session() as session:
        rows = (
            session.query(event)
            .join(model, model.id == key)
            # Since this run was asked for: on Airflow 2 another test's run of the same DAG and date has its run id.
            .filter(
                model.uri == name, event.source_run_id == dag_run.run_id, event.timestamp >= dag_run.test_started_at
            )
            .all()
        )
        return [dict(row.extra) for row in rows]
