"""Reading a deliverability report back as a person sees it: its tables, its images, PNG sizes."""

from __future__ import annotations

import base64
import struct
from html.parser import HTMLParser

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails unless ``data`` starts like a PNG."""
    assert data[:8] == PNG_SIGNATURE, data[:8]
    length, kind, width, height = struct.unpack(">I4sII", data[8:24])
    assert (length, kind) == (13, b"IHDR")
    assert data.endswith(b"IEND\xaeB`\x82")
    return width, height


class Page(HTMLParser):
    """The tables (by id: rows of cell texts, headers left out), images and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[bytes] = []
        self.text: list[str] = []
        self.tags: set[str] = set()
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        attributes = dict(attrs)
        if tag == "table":
            self._table = attributes.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr":
            self._row = []
        elif tag == "td":
            self._cell = []
        elif tag == "img":
            source = attributes["src"] or ""
            prefix = "data:image/png;base64,"
            assert source.startswith(prefix), source[:40]
            self.images.append(base64.b64decode(source[len(prefix) :]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def column(self, table: str, name_column: int = 0, value_column: int = 1) -> dict[str, str]:
        return {row[name_column]: row[value_column] for row in self.tables.get(table, [])}


def read_page(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def number(text: str) -> int:
    return int(text.replace(",", ""))
