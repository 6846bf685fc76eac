"""
What an operator read and wrote, as OpenLineage datasets, named by OpenLineage's rules.

An endpoint or any URL: namespace ``scheme://host[:port]`` (no credentials), name its path; an object on
S3 or GCS: ``s3://bucket`` or ``gs://bucket`` and its key; a local file: ``file`` and its absolute path.
An object written carries its schema (a CSV or Parquet export's fixed columns, typed for Parquet) and
its rows and bytes. OpenLineage is imported inside :func:`operator_lineage`: it is optional.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_provider_kaleyra_email.output import Written

#: URL schemes of the same store, as OpenLineage names it.
_STORES = {"s3": "s3", "s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs"}


def dataset_name(url: str) -> tuple[str, str]:
    """Return the namespace and name of an endpoint or an object by OpenLineage's naming rules."""
    parts = urlsplit(url)
    if store := _STORES.get(parts.scheme):
        bucket = parts.netloc.rpartition("@")[2]  # s3://<conn_id>@bucket/key names a connection on Airflow 2.11
        return f"{store}://{bucket}", parts.path.lstrip("/")
    if parts.scheme in ("file", "local"):
        return "file", parts.path
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}" if host else parts.scheme, parts.path


def operator_lineage(read: Sequence[str], written: Sequence[Written]) -> Any:
    """Return the ``OperatorLineage`` of the URLs read and the objects written."""
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
                *dataset_name(item.url),
                facets={"schema": SchemaDatasetFacet(fields=fields)} if fields else {},
                outputFacets={"outputStatistics": statistics},
            )
        )
    return OperatorLineage(inputs=[Dataset(*dataset_name(url)) for url in read], outputs=outputs)
