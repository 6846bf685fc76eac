"""
What an operator read and wrote, as OpenLineage datasets, for the OpenLineage provider when it is installed.

- Input: each API endpoint read; namespace ``scheme://host[:port]`` of the connection's base URL,
  name the endpoint's path (``/v1/<SID>/email/logs``).
- Output: each object written, named by OpenLineage's rules: ``s3://bucket`` + key, ``gs://bucket``
  + key, ``file`` + absolute path, else ``scheme://host[:port]`` + path. It carries the schema of a
  CSV or Parquet export (the fixed columns, typed for Parquet; JSON Lines has no fixed columns) and
  output statistics (rows, bytes).

The OpenLineage classes are imported inside :func:`operator_lineage`: the provider works without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: URL schemes of the same store, as OpenLineage names it.
_STORES = {"s3": "s3", "s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs"}


@dataclass(frozen=True)
class Written:
    """An object written: its URL, what it holds, and its columns (name: type, or None when untyped)."""

    url: str
    bytes: int
    rows: int | None = None
    columns: Mapping[str, str | None] = field(default_factory=dict)


def endpoint_name(base_url: str, path: str) -> tuple[str, str]:
    """Return the namespace and name of an API endpoint: ``scheme://host[:port]`` and the path under the base URL."""
    parts = urlsplit(base_url)
    return _authority(parts), parts.path.rstrip("/") + path


def object_name(url: str) -> tuple[str, str]:
    """Return the namespace and name of an object by OpenLineage's naming rules."""
    parts = urlsplit(url)
    store = _STORES.get(parts.scheme)
    if store:
        bucket = parts.netloc.rpartition("@")[2]  # s3://<conn_id>@bucket/key names a connection on Airflow 2.11
        return f"{store}://{bucket}", parts.path.lstrip("/")
    if parts.scheme in ("file", "local"):
        return "file", parts.path
    return _authority(parts), parts.path


def columns(known_fields: Mapping[str, str], output_format: str, extra: str) -> dict[str, str | None]:
    """Return the columns of an export: typed for Parquet (Arrow's names), untyped for CSV, none for JSON Lines."""
    if output_format == "csv":
        return dict.fromkeys([*known_fields, extra])
    if output_format == "parquet":
        import pyarrow as pa

        return {name: str(getattr(pa, kind)()) for name, kind in {**known_fields, extra: "string"}.items()}
    return {}


def operator_lineage(read: Sequence[tuple[str, str]], written: Sequence[Written]) -> Any:
    """Return the ``OperatorLineage`` of the endpoints read (namespace, name) and the objects written."""
    from airflow.providers.common.compat.openlineage.facet import (
        Dataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    outputs = []
    for item in written:
        fields = [SchemaDatasetFacetFields(name=name, type=kind) for name, kind in item.columns.items()]
        statistics = OutputStatisticsOutputDatasetFacet(rowCount=item.rows, size=item.bytes)
        outputs.append(
            OutputDataset(
                *object_name(item.url),
                facets={"schema": SchemaDatasetFacet(fields=fields)} if fields else {},
                outputFacets={"outputStatistics": statistics},
            )
        )
    return OperatorLineage(inputs=[Dataset(namespace, name) for namespace, name in read], outputs=outputs)


def _authority(parts: SplitResult) -> str:
    """Return ``scheme://host[:port]``, without any user or password; the scheme alone without a host."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}" if host else parts.scheme
