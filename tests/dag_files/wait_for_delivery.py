"""
DAGs for tests: one delivered-sensor task in each mode, waiting on ``dag_run.conf['message_id']``.

The test sends the email itself (so that faults it queues hit only the sensor's polls) and
passes the id in the run's conf. Intervals are short so the emulator's deliveries (about a
second after a send) keep every run to a few seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kaleyra_email.sensors.kaleyra_email import KaleyraEmailMessageDeliveredSensor

#: What every wait in these DAGs uses; the tests read them to set their expectations.
POKE_INTERVAL = 0.2
TIMEOUT = 3.0
NOT_FOUND_GRACE = 1.0
MODES = {"poke": {"mode": "poke"}, "reschedule": {"mode": "reschedule"}, "deferrable": {"deferrable": True}}


def _wait_dag(
    name: str, retries: int = 0, timeout: float = TIMEOUT, not_found_grace: float = NOT_FOUND_GRACE, **mode: object
) -> DAG:
    with DAG(
        f"test_wait_{name}",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
        render_template_as_native_obj=True,
    ) as dag:
        KaleyraEmailMessageDeliveredSensor(
            task_id="wait",
            message_id="{{ dag_run.conf['message_id'] }}",
            recipients="{{ dag_run.conf.get('recipients') }}",
            poke_interval=POKE_INTERVAL,
            timeout=timeout,
            not_found_grace=not_found_grace,
            retries=retries,
            retry_delay=timedelta(0),
            **mode,
        )
    return dag


wait_poke = _wait_dag("poke", **MODES["poke"])
wait_reschedule = _wait_dag("reschedule", **MODES["reschedule"])
wait_deferrable = _wait_dag("deferrable", **MODES["deferrable"])
DAGS = {"poke": wait_poke, "reschedule": wait_reschedule, "deferrable": wait_deferrable}
#: A longer timeout, for waits through long streaks of failed polls (dag.test() reschedules about 1 s apart).
PATIENT_TIMEOUT = 15.0
PATIENT = {mode: _wait_dag(f"patient_{mode}", timeout=PATIENT_TIMEOUT, **kwargs) for mode, kwargs in MODES.items()}
#: For a message that takes seconds to show (a loaded machine may poke a second late): a 404 is waited on for 10 s.
SLOW_TO_SHOW_GRACE = 10.0
SLOW_TO_SHOW = {
    mode: _wait_dag(f"slow_to_show_{mode}", timeout=PATIENT_TIMEOUT, not_found_grace=SLOW_TO_SHOW_GRACE, **kwargs)
    for mode, kwargs in MODES.items()
}
#: With retries to spare: a terminal delivery status must not use them.
wait_with_retries = _wait_dag("with_retries", retries=2, deferrable=True)
