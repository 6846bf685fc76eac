"""
A real S3 API on loopback for tests: moto's server, in a thread of the test process.

It is moto's ``ThreadedMotoServer`` (werkzeug serving moto's S3 backend) with two additions: it
binds a free port on 127.0.0.1 only, and it records every request it answers (method, path,
query), so a test can see from the server's side what a client did: a one-shot ``PUT`` or a
multipart upload, a copy, a delete.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

ACCESS_KEY = "kaleyra-test-access-key"
SECRET_KEY = "kaleyra-test-secret-key"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Request:
    """One request the server answered: ``PUT``, ``/bucket/key``, and the query's names."""

    method: str
    path: str
    query: frozenset[str]
    copy_source: str | None

    @property
    def operation(self) -> str:
        """The S3 operation, as far as the tests need to tell them apart."""
        if self.method == "PUT" and "partNumber" in self.query:
            return "UploadPart"
        if self.method == "PUT" and self.copy_source:
            return "CopyObject"
        if self.method == "PUT":
            return "PutObject"
        if self.method == "POST" and "uploads" in self.query:
            return "CreateMultipartUpload"
        if self.method == "POST" and "uploadId" in self.query:
            return "CompleteMultipartUpload"
        if self.method == "DELETE" and "uploadId" in self.query:
            return "AbortMultipartUpload"
        if self.method == "POST" and "delete" in self.query:
            return "DeleteObjects"
        if self.method == "DELETE":
            return "DeleteObject"
        return f"{self.method} {'?'.join(filter(None, [self.path, ','.join(sorted(self.query))]))}"

    @property
    def key(self) -> str:
        """The object key the request names (empty for a request on the bucket)."""
        _, _, key = self.path.lstrip("/").partition("/")
        return key


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """Log nothing: the tests read ``S3Server.requests`` instead."""


class S3Server:
    """
    Moto's S3 on a free loopback port, recording requests; a context manager.

    ``connection_json()`` is an Airflow ``aws`` connection pointed at it, for ``AIRFLOW_CONN_<ID>``.
    """

    def __init__(self) -> None:
        self.requests: list[S3Request] = []
        self._lock = threading.Lock()
        self._server = make_server(
            "127.0.0.1",
            0,
            self._recording(DomainDispatcherApplication(create_backend_app)),
            threaded=True,
            request_handler=_QuietHandler,
        )
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> S3Server:
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Forget every bucket (moto's state is per process), then stop serving."""
        if self._thread is None:
            return
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"), timeout=10)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connection_json(self, **extra: Any) -> str:
        """An Airflow ``aws`` connection to this server, as JSON for ``AIRFLOW_CONN_<ID>``."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": ACCESS_KEY,
                "password": SECRET_KEY,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": REGION, **extra},
            }
        )

    def client(self) -> Any:
        """A boto3 S3 client of this server, for the tests' own reads and checks."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def multipart_uploads(self, bucket: str) -> list[dict[str, Any]]:
        """The multipart uploads begun and neither completed nor aborted."""
        uploads: list[dict[str, Any]] = self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return uploads

    def requests_for(self, key: str) -> list[str]:
        """The operations on ``key``, in order (a copy counts for its destination)."""
        with self._lock:
            return [request.operation for request in self.requests if request.key == key]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def _recording(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def record(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            request = S3Request(
                method=environ["REQUEST_METHOD"],
                path=environ.get("PATH_INFO", ""),  # WSGI has it decoded
                query=frozenset(parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)),
                copy_source=environ.get("HTTP_X_AMZ_COPY_SOURCE"),
            )
            with self._lock:
                self.requests.append(request)
            return app(environ, start_response)

        return record
