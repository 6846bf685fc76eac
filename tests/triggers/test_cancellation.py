"""
A triggerer cancels triggers whenever a task is cleared, marked or moved: each must end at once, also a
thousand cancelled together while their polls are in flight (``asyncio.wait_for`` before Python 3.12
could hand one a result that raced with the cancel and drop the cancel: it polled on until its deadline).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_kaleyra_email.testing import Faults
from airflow_provider_kaleyra_email.triggers.kaleyra_email import KaleyraEmailMessageDeliveredTrigger

TRIGGERS = 1_000


@pytest.mark.asyncio
@pytest.mark.usefixtures("kaleyra_email_connection")
async def test_a_thousand_polling_triggers_cancelled_together_all_end_within_a_second(kaleyra_email_emulator):
    # Answers take 20 ms, as Kaleyra's do, so that polls are in flight (and answers arriving) at the cancel.
    kaleyra_email_emulator.set_faults(Faults(latency=0.02))
    triggers = [
        KaleyraEmailMessageDeliveredTrigger(
            message_id=f"0c6e0d55-0000-4000-8000-{n:012d}:1",  # unknown: 404, "not visible yet", for an hour
            poke_interval=0.05,
            not_found_grace=3600,
            end_time=time.time() + 600,
        )
        for n in range(TRIGGERS)
    ]
    tasks = [asyncio.create_task(trigger.run().__anext__()) for trigger in triggers]
    while len(kaleyra_email_emulator.requests) < 2 * TRIGGERS:  # every trigger is polling
        await asyncio.sleep(0.1)
    assert not any(task.done() for task in tasks), "none fired: they are all still waiting"

    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=1.0)

    assert len(pending) == 0, f"{len(pending)} of {TRIGGERS} triggers swallowed the cancellation and poll on"
    assert all(task.cancelled() for task in tasks)
