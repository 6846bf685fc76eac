"""Facts about the Kaleyra Email API that every layer may read: where it is, its limits, what an id may hold."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
