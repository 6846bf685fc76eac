"""Errors the provider raises. None of them ever holds the API key."""

from __future__ import annotations

from functools import partial

from airflow.providers.common.compat.sdk import AirflowException


class KaleyraEmailAPIError(AirflowException):
    """
    Kaleyra refused a request, or answered HTTP 200 with a non-empty ``error`` object.

    :param endpoint: method and path, e.g. ``GET /v1/<SID>/email/logs`` (never the key).
    :param status_code: the HTTP status (200 for an error inside a successful response).
    :param error_code: Kaleyra's own error code, when the body has one.
    :param message: Kaleyra's message, or the HTTP reason when the body has none.
    """

    def __init__(self, *, endpoint: str, message: str, status_code: int | None = None, error_code: str | None = None):
        self.endpoint = endpoint
        # AirflowException's status_code is an HTTPStatus for its REST API; here it is Kaleyra's, maybe absent.
        self.status_code = status_code  # type: ignore[assignment]
        self.error_code = error_code
        self.message = message
        status = "no HTTP status" if status_code is None else f"HTTP {status_code}"
        code = f", Kaleyra error {error_code}" if error_code else ""
        super().__init__(f"{endpoint} failed ({status}{code}): {message}")

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only __init__: tell pickle (and Airflow's exception transport) how to rebuild.
        fields = {name: getattr(self, name) for name in ("endpoint", "status_code", "error_code", "message")}
        return partial(type(self), **fields), ()


class KaleyraEmailTransientError(KaleyraEmailAPIError):
    """A failure worth another try: HTTP 429, a 5xx, a timeout, a dropped connection or an unreadable body."""


class KaleyraEmailRetriesExhaustedError(KaleyraEmailTransientError):
    """A transient failure that outlasted ``max_retries``; the message lists what each attempt got."""


class KaleyraEmailWaitError(AirflowException):
    """A wait that cannot go on: the API refused, or does not know a message just sent (a task retry may help)."""
