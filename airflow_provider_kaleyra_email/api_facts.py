"""Facts about the Kaleyra Email API that every layer may read: where it is, its paths and limits, what ids hold."""

from __future__ import annotations

from urllib.parse import quote

DEFAULT_BASE_URL = "https://api.kaleyra.io"
#: Kaleyra's regional pods, chosen with the connection extra ``region``. An explicit host wins.
REGION_BASE_URLS = {
    "in": "https://api.in.kaleyra.io",
    "sg": "https://api.ap.kaleyra.io",
    "eu": "https://api.eu.kaleyra.io",
}
#: The API's own bound for ``limit``; its default is 50.
MAX_PAGE_SIZE = 100
#: The largest (decompressed) body we read: a page of 100 log rows is about 50 KB, and a worker's memory is finite.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: What a message id (``<uuid>:<n>``) may hold: nothing that changes a URL, no white space, quotes or brackets.
MESSAGE_ID_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:~@+=")


def path_segment(value: str) -> str:
    """Percent-encode ``value`` as exactly one URL path segment (``.`` or ``..`` alone too, lest a URL resolve them)."""
    encoded = quote(value, safe=":@-._~+=")
    return encoded.replace(".", "%2E") if encoded in {".", ".."} else encoded


def send_path(sid: str) -> str:
    return f"/v1/{path_segment(sid)}/email"


def logs_path(sid: str) -> str:
    return f"{send_path(sid)}/logs"


def summary_stats_path(sid: str) -> str:
    return f"{send_path(sid)}/stats"


def message_stats_path(sid: str, message_id: str) -> str:
    return f"{summary_stats_path(sid)}/{path_segment(message_id)}"
