"""What the sync and the async hook share: the connection id, their overrides of its settings, the retry policy."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.connection import ConnectionConfig, check_overrides
from airflow_provider_kaleyra_email.hooks import _api

try:
    from airflow.providers.common.compat.sdk import mask_secret
except ImportError:  # common-compat before 1.21 (Airflow 2.11 installs 1.20)
    from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef]

__all__ = ["_KaleyraEmailBaseHook", "mask_secret"]


class _KaleyraEmailBaseHook(BaseHook):
    """What both hooks share: the connection id, their overrides of its settings, and the retry policy."""

    conn_name_attr = "kaleyra_email_conn_id"
    default_conn_name = "kaleyra_email_default"

    def __init__(self, conn_id: str, overrides: dict[str, Any], wait_initial: float, wait_max: float, **kw: Any):
        super().__init__(**kw)
        self.kaleyra_email_conn_id = conn_id
        self._overrides = check_overrides(**overrides)
        self.retry_wait_initial = validation.positive_number(wait_initial, parameter="retry_wait_initial")
        self.retry_wait_max = validation.positive_number(wait_max, parameter="retry_wait_max")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kaleyra_email_conn_id={self.kaleyra_email_conn_id!r})"

    def _attempts(self, config: ConnectionConfig, endpoint: str, *, idempotent: bool = True) -> _api.Attempts:
        return _api.Attempts(
            endpoint=endpoint,
            max_retries=config.max_retries,
            idempotent=idempotent,
            wait_initial=self.retry_wait_initial,
            wait_max=self.retry_wait_max,
            log=self.log,
        )
