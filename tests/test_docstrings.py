"""
The public API documents every parameter (``:param name:``), as Airflow's providers do: ruff's D417
checks only Google-style ``Args:`` sections, so this test checks the Sphinx-style fields we write.
"""

from __future__ import annotations

import inspect

import pytest

from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAsyncHook, KaleyraEmailHook
from airflow_provider_kaleyra_email.operators import kaleyra_email as operators
from airflow_provider_kaleyra_email.sensors.kaleyra_email import KaleyraEmailMessageDeliveredSensor
from airflow_provider_kaleyra_email.triggers.kaleyra_email import (
    KaleyraEmailMessageDeliveredTrigger,
    KaleyraEmailNewLogRowsTrigger,
)

PUBLIC_CLASSES = [
    KaleyraEmailHook,
    KaleyraEmailAsyncHook,
    KaleyraEmailMessageDeliveredSensor,
    KaleyraEmailMessageDeliveredTrigger,
    KaleyraEmailNewLogRowsTrigger,
    *(
        getattr(operators, name)
        for name in dir(operators)
        if name.startswith("KaleyraEmail") and name.endswith("Operator")
    ),
]
PACKAGE = "airflow_provider_kaleyra_email"
#: Parameters every Airflow operator, sensor or trigger takes and documents once, in Airflow.
INHERITED = {"self", "kwargs", "args", "context", "event"}


def documented_callables():
    for cls in PUBLIC_CLASSES:
        yield pytest.param(cls, cls.__init__, id=f"{cls.__name__}.__init__")
        for name, member in vars(cls).items():
            overrides = any(hasattr(base, name) for base in cls.__mro__[1:] if not base.__module__.startswith(PACKAGE))
            if not name.startswith("_") and inspect.isfunction(member) and member.__doc__ and not overrides:
                yield pytest.param(cls, member, id=f"{cls.__name__}.{name}")


@pytest.mark.parametrize(("cls", "function"), list(documented_callables()))
def test_every_parameter_of_the_public_api_is_documented(cls, function):
    docstring = (cls.__doc__ or "") + (function.__doc__ or "") if function.__name__ == "__init__" else function.__doc__
    names = [name for name in inspect.signature(function).parameters if name not in INHERITED]
    undocumented = [name for name in names if f":param {name}:" not in docstring]
    assert undocumented == [], f"{function.__qualname__} does not document {undocumented}"
