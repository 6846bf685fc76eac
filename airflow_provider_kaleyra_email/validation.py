"""Argument checks, run before any request or write; each ``ValueError`` names the parameter and the bad value."""

from __future__ import annotations

import contextlib
import difflib
import re
from datetime import date, datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow_provider_kaleyra_email import intervals
from airflow_provider_kaleyra_email.api_facts import MAX_PAGE_SIZE, MESSAGE_ID_ALLOWED

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_HINT = "use 'YYYY-MM-DD', a date, or a timezone-aware datetime"
_WHOLE_NUMBER = re.compile(r"\s*[-+]?\d+\s*")
_FLAGS = dict.fromkeys(("true", "1", "yes", "on"), True) | dict.fromkeys(("false", "0", "no", "off", ""), False)
#: The words that name a flag (``boolean`` also reads an empty string as false).
FLAG_WORDS = frozenset(_FLAGS) - {""}


def account_timezone(name: Any, *, parameter: str = "timezone") -> ZoneInfo:
    """Return the account's time zone from an IANA name such as ``'Asia/Kolkata'``."""
    if isinstance(name, str) and name.strip():
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(name.strip())
    raise ValueError(f"{parameter}={name!r} is not a known IANA time zone (e.g. 'UTC', 'Asia/Kolkata').")


def parse_date(value: Any, *, parameter: str, tz: tzinfo) -> date:
    """Return the account-local day of ``'YYYY-MM-DD'``, a ``date``, or an aware datetime or ISO 8601 string."""
    if isinstance(value, str):
        text = value.strip()
        day_only = bool(_DATE_ONLY.fullmatch(text))
        try:
            value = date.fromisoformat(text) if day_only else datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            problem = "is not a real calendar date" if day_only else f"is not a date; {_DATE_HINT}"
            raise ValueError(f"{parameter}={value!r} {problem}.") from None
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError(
                f"{parameter}={value.isoformat()!r} is a naive datetime, so its day is ambiguous; "
                "pass a timezone-aware datetime or a date."
            )
        return value.astimezone(tz).date()
    if isinstance(value, date):
        return value
    raise ValueError(f"{parameter}={value!r} ({type(value).__name__}) is not a date; {_DATE_HINT}.")


def date_range(from_date: Any, to_date: Any, *, tz: tzinfo) -> tuple[date | None, date | None]:
    """Return both ends of an inclusive range (either may be open), in order and not after the account's today."""
    start = None if from_date is None else _day_begun(from_date, parameter="from_date", tz=tz)
    end = None if to_date is None else _day_begun(to_date, parameter="to_date", tz=tz)
    if start is not None and end is not None and start > end:
        raise ValueError(
            f"from_date={start.isoformat()!r} is after to_date={end.isoformat()!r}; "
            "both ends are inclusive, so from_date must not be later than to_date."
        )
    return start, end


def _day_begun(value: Any, *, parameter: str, tz: tzinfo) -> date:
    """Return the day ``value`` names, refused after the account's today: no data exists for it yet."""
    day, now = parse_date(value, parameter=parameter, tz=tz), intervals.today(tz)
    if day > now:
        shown = value if isinstance(value, str) else value.isoformat()
        raise ValueError(
            f"{parameter}={shown!r} is {day}, after the account's today ({now} in {tz}); "
            f"no day after {now} has begun there, so give {now} or earlier."
        )
    return day


def status_typos(terms: Iterable[str], statuses: Collection[str]) -> dict[str, str]:
    """Return each search term that is one word close to a status but none (it most likely matches no row)."""
    known = {status.upper() for status in statuses}
    typos = {}
    for term in terms:
        word = term.strip().upper()
        if word.isalpha() and word not in known:
            close = difflib.get_close_matches(word, known, n=1, cutoff=0.75)
            if close:
                typos[term] = close[0]
    return typos


def int_in_range(value: Any, *, parameter: str, low: int, high: int) -> int:
    """Return a whole number from ``low`` to ``high``: an int, or digits from a template."""
    number = int(value) if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value) else value
    if not isinstance(number, int) or isinstance(number, bool):
        raise ValueError(f"{parameter}={value!r} is not a whole number.")
    if not low <= number <= high:
        raise ValueError(f"{parameter}={value!r} is out of range; use {low} to {high}.")
    return number


def page_size(value: Any, *, parameter: str = "page_size") -> int:
    """Return a page size from 1 to the API's maximum of 100."""
    return int_in_range(value, parameter=parameter, low=1, high=MAX_PAGE_SIZE)


def positive_number(value: Any, *, parameter: str) -> float:
    """Return a positive, finite number of seconds."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.0
    if isinstance(value, bool) or not 0 < number < float("inf"):
        raise ValueError(f"{parameter}={value!r} is not a positive, finite number of seconds.")
    return number


def boolean(value: Any, *, parameter: str) -> bool:
    """Return a flag from connection extras, where a URI gives strings."""
    flag = _FLAGS.get(value.strip().lower()) if isinstance(value, str) else value
    if not isinstance(flag, bool):
        raise ValueError(f"{parameter}={value!r} is not true or false.")
    return flag


def message_id(value: Any, *, parameter: str = "message_id") -> str:
    """Return a message id, refused when it could not be a Kaleyra id (likely a template that rendered a list)."""
    if not isinstance(value, str):
        raise ValueError(f"{parameter}={value!r} ({type(value).__name__}) is not a message id string.")
    if not value:
        raise ValueError(f"{parameter}={value!r} is empty; pass the id Kaleyra returned, e.g. '<uuid>:1'.")
    bad = ", ".join(repr(char) for char in sorted(set(value) - MESSAGE_ID_ALLOWED))
    if bad:
        raise ValueError(
            f"{parameter}={value!r} holds characters no Kaleyra message id has ({bad}); ids look like '<uuid>:<n>'."
        )
    if ".." in value:
        raise ValueError(f"{parameter}={value!r} holds '..', which no Kaleyra message id has.")
    return value


def email_address(value: Any, *, parameter: str) -> str:
    """Return one email address (no check beyond an ``@`` and no white space)."""
    if not isinstance(value, str) or "@" not in value or any(char.isspace() for char in value):
        raise ValueError(f"{parameter}={value!r} is not an email address.")
    return value


def search_terms(value: Any, *, parameter: str = "search") -> list[str]:
    """Return ``search`` as a list of terms: a string is one term, a list or tuple is several (all must match)."""
    if value is None:
        return []
    if not isinstance(value, str | list | tuple):
        raise ValueError(f"{parameter}={value!r} ({type(value).__name__}) must be a string or a list of strings.")
    terms = [value] if isinstance(value, str) else list(value)
    for index, term in enumerate(terms):
        if not isinstance(term, str) or not term.strip():
            raise ValueError(f"{parameter}[{index}]={term!r} ({type(term).__name__}) must be a non-empty string.")
    return terms


def send_body(
    *, from_email: Any, to: Any, subject: Any, html_body: Any, text_body: Any, message_type: Any
) -> dict[str, Any]:
    """Return the JSON body of a send, checked before anything goes out."""
    recipients = [to] if isinstance(to, str) else to
    if not isinstance(recipients, list | tuple) or not recipients:
        raise ValueError(f"to={to!r} must be an email address or a non-empty list of them.")
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"subject={subject!r} must be a non-empty string.")
    if message_type is not None and (not isinstance(message_type, str) or not message_type.strip()):
        raise ValueError(f"message_type={message_type!r} must be a non-empty string.")
    body: dict[str, Any] = {
        "from": email_address(from_email, parameter="from_email"),
        "to": [email_address(address, parameter=f"to[{n}]") for n, address in enumerate(recipients)],
        "subject": subject,
    }
    for name, text in (("html_body", html_body), ("text_body", text_body)):
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{name}={text!r} must be a string.")
        if text:
            body[name] = text
    if "html_body" not in body and "text_body" not in body:
        raise ValueError("html_body=None and text_body=None: give at least one body.")
    if message_type is not None:
        body["type"] = message_type
    return body
