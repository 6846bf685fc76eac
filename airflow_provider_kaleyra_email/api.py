"""
What we know about the Kaleyra Email API, with no Airflow and no HTTP client in it.

The sync hook, the async trigger and the emulator all read the API through this module, so
there is one place that says how a path is built, what a response envelope means, and how a
status is classified. ``../shared/kaleyra-email-stats-and-logs-api.txt`` is the source; the
comments here say where we had to interpret it.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any
from urllib.parse import quote, quote_plus

DEFAULT_BASE_URL = "https://api.kaleyra.io"

#: Kaleyra's regional pods, chosen with the connection extra ``region``. An explicit host wins.
REGION_BASE_URLS: Mapping[str, str] = {
    "in": "https://api.in.kaleyra.io",
    "sg": "https://api.ap.kaleyra.io",
    "eu": "https://api.eu.kaleyra.io",
}

#: The API's own bound for ``limit``; its default is 50.
MAX_PAGE_SIZE = 100
API_DEFAULT_PAGE_SIZE = 50

#: The header that carries the API key, and nothing else does.
API_KEY_HEADER = "api-key"

#: The largest response body we read (after decompression). A page of 100 log rows is about
#: 50 KB; anything near this is not an answer we can use, and must not exhaust a worker's memory.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

#: Characters a message id may hold. Kaleyra's ids look like ``<uuid>:<n>``; we treat them as
#: opaque but refuse characters that no id has and that would change a URL (``/ ? # %``),
#: white space, and quotes or brackets, which are the signature of a rendered Python list.
MESSAGE_ID_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:~@+=")


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def path_segment(value: str) -> str:
    """
    Percent-encode ``value`` so that it is exactly one URL path segment.

    ``/``, ``?``, ``#`` and ``%`` are encoded, so no id can add a segment, start a query or a
    fragment, or smuggle an already-encoded character; ``.`` and ``..`` alone, which a URL
    library may resolve as dot segments, are encoded too.
    """
    encoded = quote(value, safe=":@-._~+=")
    if encoded in {".", ".."}:
        return encoded.replace(".", "%2E")
    return encoded


def account_path(sid: str) -> str:
    return f"/v1/{path_segment(sid)}/email"


def logs_path(sid: str) -> str:
    return f"{account_path(sid)}/logs"


def summary_stats_path(sid: str) -> str:
    return f"{account_path(sid)}/stats"


def message_stats_path(sid: str, message_id: str) -> str:
    return f"{account_path(sid)}/stats/{path_segment(message_id)}"


def send_path(sid: str) -> str:
    return account_path(sid)


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiErrorDetail:
    """Kaleyra's own words about a failure, taken from whatever shape the body had."""

    error_code: str | None
    message: str


def error_detail(body: Any) -> ApiErrorDetail | None:
    """
    Return the error a response body carries, or ``None`` when it carries none.

    The page shows ``"error": {}`` on success and never shows a failure, so we accept the
    shapes Kaleyra's other v1 APIs use: ``{"error": {"code", "message"}}``, a top-level
    ``code``/``message``, or an ``error`` object mapping a field to its message.
    """
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    if isinstance(error, str) and error.strip():
        return ApiErrorDetail(_text_or_none(body.get("code")), error.strip())
    if not isinstance(error, Mapping) or not error:
        return None
    code = _text_or_none(error.get("code")) or _text_or_none(body.get("code"))
    message = _text_or_none(error.get("message")) or _text_or_none(body.get("message"))
    if message is None:
        message = "; ".join(f"{key}: {value}" for key, value in error.items() if key != "code")
    return ApiErrorDetail(code, message or "error object without a message")


def error_detail_for_status(body: Any, reason: str) -> ApiErrorDetail:
    """The error of a non-2xx response: what the body says, else the HTTP reason phrase."""
    detail = error_detail(body)
    if detail is not None:
        return detail
    if isinstance(body, Mapping):
        message = _text_or_none(body.get("message"))
        if message:
            return ApiErrorDetail(_text_or_none(body.get("code")), message)
    return ApiErrorDetail(None, reason or "no error message in the response")


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def envelope_data(body: Any) -> list[Any]:
    """The ``data`` list of a successful response; raises ``ValueError`` for any other shape."""
    if not isinstance(body, Mapping):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    data = body.get("data")
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError(f"expected 'data' to be a list, got {type(data).__name__}")
    return data


def envelope_rows(body: Any) -> list[dict[str, Any]]:
    """
    The ``data`` list of a listing page, every entry a JSON object.

    An entry that is not an object is not a row we can export or count, and dropping it would
    lose data in silence: it raises ``ValueError``.
    """
    data = envelope_data(body)
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(f"data[{index}] is {_preview_value(entry)} ({type(entry).__name__}), not a JSON object")
    return data


def _preview_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def envelope_total(body: Mapping[str, Any]) -> int | None:
    """The logs endpoint's ``total`` (an int, or a numeric string); ``None`` when absent or unreadable."""
    total = body.get("total")
    if isinstance(total, bool):
        return None
    if isinstance(total, int):
        return total if total >= 0 else None
    if isinstance(total, str) and total.strip().isdigit():
        return int(total)
    return None


def odd_total(body: Mapping[str, Any]) -> str | None:
    """``total`` as sent when it is present but not a count (``"many"``, ``-1``, ``1.5``), for messages."""
    if "total" not in body or body["total"] is None or envelope_total(body) is not None:
        return None
    return _preview_value(body["total"])


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------


def secret_forms(secret: str) -> list[str]:
    """
    The forms in which an echo of ``secret`` may come back: as is, URL-encoded, and in base64
    (as in an ``Authorization: Basic`` header), at any alignment inside a longer base64 text.
    """
    forms = {secret, quote(secret, safe=""), quote_plus(secret)}
    raw = secret.encode()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        # Drop the characters that also depend on the bytes before and after the secret.
        core = encoded[(4 if offset else 0) : 4 * ((offset + len(raw)) // 3)]
        if len(core) >= 8:
            forms.update({core, core.replace("+", "-").replace("/", "_")})
    return sorted(forms, key=len, reverse=True)


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every form of ``secret`` (see :func:`secret_forms`) replaced by ``***``."""
    if not secret or not text:
        return text
    pattern = re.compile("|".join(re.escape(form) for form in secret_forms(secret)), re.IGNORECASE)
    return pattern.sub("***", text)


def page_count(total: int, page_size: int) -> int:
    return max(1, math.ceil(total / page_size))


def flatten_day(day: Mapping[str, Any]) -> dict[str, Any]:
    """
    Turn one ``stats`` day into a flat row ``{"date": ..., <metric>: <value>, ...}``.

    Every metric the API sends is kept, including ones the page does not list. ``stats`` is a
    list; the page only ever shows one entry, and if there are more we add their numeric
    metrics up so the row still stands for the whole day.
    """
    row: dict[str, Any] = {"date": day.get("date")}
    for entry in day.get("stats") or []:
        metrics = entry.get("metrics") if isinstance(entry, Mapping) else None
        if not isinstance(metrics, Mapping):
            continue
        for name, value in metrics.items():
            if name == "date":
                continue
            if name in row and _is_number(row[name]) and _is_number(value):
                row[name] += value
            else:
                row.setdefault(name, value)
    return row


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def log_row_key(row: Mapping[str, Any]) -> tuple[Any, Any]:
    """A log row's identity: one row per message per recipient batch."""
    return (row.get("message_id"), row.get("to_mail"))


_complete_row_key = itemgetter("message_id", "to_mail")  # log_row_key, for rows that have both


def log_row_keys(rows: list[Mapping[str, Any]]) -> list[tuple[Any, Any]]:
    """``log_row_key`` of every row of a page; in C when every row has both fields, as documented."""
    try:
        return list(map(_complete_row_key, rows))
    except KeyError:
        return [log_row_key(row) for row in rows]
