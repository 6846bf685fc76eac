"""
Argument checks shared by the hook, the operators, the sensor and the trigger.

Each check runs before any request is sent or anything is written, and its ``ValueError``
names the parameter and the bad value, so a DAG author can fix the call from the message
alone. No check ever sees the API key.
"""

from __future__ import annotations

import re
from datetime import date, datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow_provider_kaleyra_email.hooks._api import MAX_PAGE_SIZE, MESSAGE_ID_ALLOWED, REGION_BASE_URLS

if TYPE_CHECKING:
    from collections.abc import Sequence

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_HINT = "use 'YYYY-MM-DD', a date, or a timezone-aware datetime"


def account_timezone(name: Any, *, parameter: str = "timezone") -> ZoneInfo:
    """Return the account's time zone from an IANA name such as ``'Asia/Kolkata'``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{parameter}={name!r} is not a time zone name; use an IANA name such as 'UTC'.")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{parameter}={name!r} is not a known IANA time zone (e.g. 'UTC', 'Asia/Kolkata').") from None


def parse_date(value: Any, *, parameter: str, tz: tzinfo) -> date:
    """
    Return a calendar date in the account's time zone.

    Accepts ``'YYYY-MM-DD'``, a ``date``, an aware ``datetime`` (converted to ``tz`` first), or
    an ISO 8601 timestamp string with an offset, as ``{{ data_interval_start }}`` renders.
    Naive datetimes are refused: we cannot know which day they mean.
    """
    if isinstance(value, datetime):
        return _aware_to_date(value, parameter=parameter, tz=tz)
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return _parse_date_string(value, parameter=parameter, tz=tz)
    raise ValueError(f"{parameter}={value!r} ({type(value).__name__}) is not a date; {_DATE_HINT}.")


def _aware_to_date(value: datetime, *, parameter: str, tz: tzinfo) -> date:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{parameter}={value.isoformat()!r} is a naive datetime, so its day is ambiguous; "
            "pass a timezone-aware datetime or a date."
        )
    return value.astimezone(tz).date()


def _parse_date_string(value: str, *, parameter: str, tz: tzinfo) -> date:
    text = value.strip()
    if _DATE_ONLY.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{parameter}={value!r} is not a real calendar date.") from None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{parameter}={value!r} is not a date; {_DATE_HINT}.") from None
    return _aware_to_date(parsed, parameter=parameter, tz=tz)


def date_range(from_date: Any, to_date: Any, *, tz: tzinfo) -> tuple[date | None, date | None]:
    """Both ends of an inclusive range (either may be open), checked for order."""
    start = None if from_date is None else parse_date(from_date, parameter="from_date", tz=tz)
    end = None if to_date is None else parse_date(to_date, parameter="to_date", tz=tz)
    if start is not None and end is not None and start > end:
        raise ValueError(
            f"from_date={start.isoformat()!r} is after to_date={end.isoformat()!r}; "
            "both ends are inclusive, so from_date must not be later than to_date."
        )
    return start, end


def page_size(value: Any, *, parameter: str = "page_size") -> int:
    """Return a page size between 1 and the API's maximum of 100 (an int, or digits from a template)."""
    number = _integer(value, parameter=parameter)
    if not 1 <= number <= MAX_PAGE_SIZE:
        raise ValueError(f"{parameter}={value!r} is out of range; the API accepts 1 to {MAX_PAGE_SIZE}.")
    return number


def int_in_range(value: Any, *, parameter: str, low: int, high: int) -> int:
    number = _integer(value, parameter=parameter)
    if not low <= number <= high:
        raise ValueError(f"{parameter}={value!r} is out of range; use {low} to {high}.")
    return number


def _integer(value: Any, *, parameter: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{parameter}={value!r} is a boolean, not a whole number.")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ValueError(f"{parameter}={value!r} is not a whole number.")


def positive_number(value: Any, *, parameter: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{parameter}={value!r} is a boolean, not a number of seconds.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{parameter}={value!r} is not a number of seconds.") from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"{parameter}={value!r} must be a positive, finite number of seconds.")
    return number


def boolean(value: Any, *, parameter: str) -> bool:
    """Return a flag from connection extras, where a URI gives strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "1", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"false", "0", "no", "off", ""}:
        return False
    raise ValueError(f"{parameter}={value!r} is not true or false.")


def message_id(value: Any, *, parameter: str = "message_id") -> str:
    """
    Return a message id, refused when it could not be a Kaleyra id.

    Ids are opaque, but none contains white space, ``/ ? # %``, quotes, brackets or ``..``;
    such a value is nearly always a template that rendered something else (a list, a path),
    and the request it would make is not the one the author meant.
    """
    if not isinstance(value, str):
        raise ValueError(f"{parameter}={value!r} ({type(value).__name__}) is not a message id string.")
    if not value.strip():
        raise ValueError(f"{parameter}={value!r} is empty; pass the id Kaleyra returned, e.g. '<uuid>:1'.")
    bad = sorted({char for char in value if char not in MESSAGE_ID_ALLOWED})
    if bad:
        shown = ", ".join(repr(char) for char in bad)
        raise ValueError(
            f"{parameter}={value!r} holds characters no Kaleyra message id has ({shown}); ids look like '<uuid>:<n>'."
        )
    if ".." in value:
        raise ValueError(f"{parameter}={value!r} holds '..', which no Kaleyra message id has.")
    return value


def email_address(value: Any, *, parameter: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{parameter}={value!r} is not an email address.")
    if any(char.isspace() for char in value) or "@" not in value:
        raise ValueError(f"{parameter}={value!r} is not a single email address.")
    return value


def search_terms(value: Any, *, parameter: str = "search") -> list[str]:
    """``search`` as a list of terms: a string is one term, a list or tuple is several (all must match)."""
    if value is None:
        return []
    terms: Sequence[Any]
    if isinstance(value, str):
        terms = [value]
    elif isinstance(value, list | tuple):
        terms = value
    else:
        raise ValueError(f"{parameter}={value!r} ({type(value).__name__}) must be a string or a list of strings.")
    for index, term in enumerate(terms):
        if not isinstance(term, str):
            raise ValueError(
                f"{parameter}[{index}]={term!r} ({type(term).__name__}) is not a string; "
                "every search term must be a string."
            )
        if not term.strip():
            raise ValueError(f"{parameter}[{index}]={term!r} is empty; drop it or give a term.")
    return list(terms)


def region(value: Any) -> str | None:
    """Return the connection extra ``region``: one of Kaleyra's pods, or empty for the global API."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    key = value.strip().lower() if isinstance(value, str) else value
    if key not in REGION_BASE_URLS:
        known = ", ".join(repr(name) for name in REGION_BASE_URLS)
        raise ValueError(f"Connection extra region={value!r} is not a Kaleyra region; use one of {known}.")
    return str(key)


def send_body(
    *,
    from_email: Any,
    to: Any,
    subject: Any,
    html_body: Any,
    text_body: Any,
    message_type: Any,
) -> dict[str, Any]:
    """Return the JSON body of a send, checked before anything goes out."""
    recipients = [to] if isinstance(to, str) else to
    if not isinstance(recipients, list | tuple) or not recipients:
        raise ValueError(f"to={to!r} must be an email address or a non-empty list of them.")
    body: dict[str, Any] = {
        "from": email_address(from_email, parameter="from_email"),
        "to": [email_address(r, parameter=f"to[{n}]") for n, r in enumerate(recipients)],
    }
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"subject={subject!r} must be a non-empty string.")
    body["subject"] = subject
    for name, value in (("html_body", html_body), ("text_body", text_body)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name}={value!r} must be a string.")
        if value:
            body[name] = value
    if "html_body" not in body and "text_body" not in body:
        raise ValueError("html_body=None and text_body=None: give at least one body.")
    if message_type is not None:
        if not isinstance(message_type, str) or not message_type.strip():
            raise ValueError(f"message_type={message_type!r} must be a non-empty string.")
        body["type"] = message_type
    return body
