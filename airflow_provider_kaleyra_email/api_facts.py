"""Facts about the Kaleyra Email API that every layer may read: where it is, its paths and limits, what ids hold."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_BASE_URL = "https://api.kaleyra.io"

#: Kaleyra's regional pods, chosen with the connection extra ``region``. An explicit host wins.
REGION_BASE_URLS: Mapping[str, str] = {
    "in": "https://api.in.kaleyra.io",
    "sg": "https://api.ap.kaleyra.io",
    "eu": "https://api.eu.kaleyra.io",
}

#: The API's own bound for ``limit``; its default is 50.
MAX_PAGE_SIZE = 100

#: The largest response body we read (decompressed). A page of 100 log rows is about 50 KB;
#: anything near this is no answer we can use, and must not exhaust a worker's memory.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

#: Characters a message id may hold (ids look like ``<uuid>:<n>``): none that would change a URL,
#: white space, quotes or brackets (the signature of a rendered Python list).
MESSAGE_ID_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:~@+=")


def path_segment(value: str) -> str:
    """Percent-encode ``value`` as exactly one URL path segment (``.`` or ``..`` alone too, lest a URL resolve them)."""
    encoded = quote(value, safe=":@-._~+=")
    return encoded.replace(".", "%2E") if encoded in {".", ".."} else encoded


def send_path(sid: str) -> str:
    return f"/v1/{path_segment(sid)}/email"


def logs_path(sid: str) -> str:
    return f"/v1/{path_segment(sid)}/email/logs"


def summary_stats_path(sid: str) -> str:
    return f"/v1/{path_segment(sid)}/email/stats"


def message_stats_path(sid: str, message_id: str) -> str:
    return f"/v1/{path_segment(sid)}/email/stats/{path_segment(message_id)}"
