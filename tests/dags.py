"""Running real DAGs in tests, on Airflow 2.11 and 3.x alike."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime


def run_dag(dag: Any, logical_date: datetime, **kwargs: Any) -> Any:
    """``dag.test()`` for one logical date; returns the DagRun. Airflow 2 calls it ``execution_date``."""
    if "logical_date" in inspect.signature(dag.test).parameters:
        return dag.test(logical_date=logical_date, **kwargs)
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
