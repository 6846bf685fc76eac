"""Errors the provider raises. None of them ever holds the API key."""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException


class KaleyraEmailError(AirflowException):
    """Base class of this provider's errors."""


class KaleyraEmailAPIError(KaleyraEmailError):
    """
    Kaleyra refused a request, or answered HTTP 200 with a non-empty ``error`` object.

    :param endpoint: method and path, e.g. ``GET /v1/<SID>/email/logs`` (never the key).
    :param status_code: the HTTP status (200 for an error inside a successful response).
    :param error_code: Kaleyra's own error code, when the body has one.
    :param message: Kaleyra's message, or the HTTP reason when the body has none.
    """

    def __init__(self, *, endpoint: str, status_code: int | None, error_code: str | None, message: str):
        self.endpoint = endpoint
        # AirflowException declares status_code as an HTTPStatus for its own REST API; here it is
        # Kaleyra's status, which may be absent.
        self.status_code = status_code  # type: ignore[assignment]
        self.error_code = error_code
        self.message = message
        super().__init__(self._describe())

    def _describe(self) -> str:
        status = f"HTTP {self.status_code}" if self.status_code is not None else "no HTTP status"
        code = f", Kaleyra error {self.error_code}" if self.error_code else ""
        return f"{self.endpoint} failed ({status}{code}): {self.message}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only __init__: tell pickle (and Airflow's exception transport) how to rebuild.
        return (_rebuild, (type(self), self.endpoint, self.status_code, self.error_code, self.message))


def _rebuild(
    cls: type[KaleyraEmailAPIError],
    endpoint: str,
    status_code: int | None,
    error_code: str | None,
    message: str,
) -> KaleyraEmailAPIError:
    return cls(endpoint=endpoint, status_code=status_code, error_code=error_code, message=message)


class KaleyraEmailTransientError(KaleyraEmailAPIError):
    """
    A failure worth another try.

    HTTP 429, a 5xx, a timeout, a dropped connection or an unreadable body. The hooks retry it
    and, when retries run out, raise the subclass below.
    """


class KaleyraEmailRetriesExhaustedError(KaleyraEmailTransientError):
    """
    A request kept failing in a way worth retrying until ``max_retries`` ran out.

    The message lists what each attempt got.
    """


class KaleyraEmailWaitError(KaleyraEmailError):
    """
    The wait for a message cannot go on.

    The API refused the request (401, 403, 400), or still did not know the message after the
    grace for a message just sent. A terminal delivery status is not this error: it is an
    ``AirflowFailException``, so that no retry is spent on it.
    """
