"""A real Cloud Storage server for the tests: `gcp-storage-emulator` (PyPI, the `test`
extra) serving the JSON API on 127.0.0.1, in memory, in a thread of the test process.

    with gcs_emulator.running() as server:
        ...  # gs://<server.bucket>/... reaches it, from this process and its children

What each client needs to find it, set in `os.environ` for the block (children inherit it):
`STORAGE_EMULATOR_HOST` (gcsfs, behind etils.epath, and google-cloud-storage, behind
tensorboardX), `TENSORSTORE_GCS_HTTP_URL` (TensorStore's gcs driver, behind Orbax's arrays),
`FSSPEC_GS_TOKEN=anon` (no Google credentials are looked for) and
`GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false` (gcsfs would otherwise ask the gRPC storage-control
API, which no emulator serves, for each bucket's layout: a minute's timeout). gcsfs reads the
last one when it is imported: start the server before anything touches a gs:// path.
`SUM_JAX_CLOUD_CACHE` (the local mirror of prepared datasets, `sum_jax.cloud.local_copy`)
goes to a temporary folder, not the user's ~/.cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator

BUCKET = "sum-jax-test"


@dataclasses.dataclass
class Server:
    url: str
    bucket: str
    env: dict[str, str]

    def path(self, *parts: str) -> str:
        """`gs://<bucket>/<parts...>`."""
        return "/".join([f"gs://{self.bucket}", *parts])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(bucket: str = BUCKET) -> Iterator[Server]:
    """Starts the emulator with one empty `bucket`; stops it (and restores the environment)
    when the block ends."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "FSSPEC_GS_TOKEN": "anon",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "SUM_JAX_CLOUD_CACHE": tempfile.mkdtemp(prefix="sum_jax_gs_cache_"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _anonymous_fsspec()
    if "gcsfs" in sys.modules:  # imported before the settings above: its plain class
        import fsspec
        import gcsfs.core

        for name in ("gs", "gcs"):
            fsspec.register_implementation(name, gcsfs.core.GCSFileSystem, clobber=True)
    # Its "Resource not found" lines are the clients' existence checks, not failures.
    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    # The emulator rewrites its whole index (every object's metadata, as indented JSON) after
    # each change, for a restart to read back: quadratic in the objects, minutes for the
    # thousand files of a few Orbax saves. In memory there is no restart to serve.
    server._storage._write_config_to_file = lambda: None
    _generation_on_downloads()
    _binary_safe_uploads()
    server.start()
    # A client that closes its connection early (TensorStore does) is not an error either:
    # without this, socketserver prints each BrokenPipeError's traceback.
    server._api._httpd.handle_error = lambda request, client_address: None
    try:
        yield Server(url, bucket, env)
    finally:
        server.stop()
        shutil.rmtree(env["SUM_JAX_CLOUD_CACHE"], ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _anonymous_fsspec() -> None:
    """fsspec reads `FSSPEC_GS_TOKEN` when it is imported; if it was imported before, the
    setting goes into its configuration directly."""
    import fsspec.config

    fsspec.config.conf.setdefault("gs", {})["token"] = "anon"
    fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"


def _generation_on_downloads() -> None:
    """Cloud Storage sends an object's generation as `x-goog-generation` with its bytes;
    TensorStore reads it (OCDBT's manifest is written and read by generation: "Malformed
    StorageGeneration" without it), and this emulator leaves it out. Added, once."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    if getattr(objects.download, "sends_generation", False):
        return
    plain = objects.download

    def download(request, response, storage, *args, **kwargs):
        plain(request, response, storage, *args, **kwargs)
        if response.status.value < 300:  # found: its generation with it
            params = request.params
            obj = storage.get_file_obj(params["bucket_name"], params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj["metageneration"])

    download.sends_generation = True
    objects.download = download  # `objects.get` (`?alt=media`) calls it by this name
    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is plain:
                handlers[method] = download


def _binary_safe_uploads() -> None:
    """The emulator reads a multipart upload (gcsfs's for every small file) with Python's
    e-mail parser, which takes a `\\r` at the end of the bytes for part of the line break
    before the closing boundary and drops it: one byte short, a Zstd chunk of Orbax's no
    longer reads. Parsed here as bytes, the line break style taken from the headers."""
    import json
    import re

    from gcp_storage_emulator import server

    if getattr(server._read_data, "binary_safe", False):
        return
    plain = server._read_data

    def read_data(request_handler, query):
        content_type = request_handler.headers.get("Content-Type") or ""
        boundary = re.search(r'boundary="?([^";]+)"?', content_type)
        if not content_type.startswith("multipart/related") or boundary is None:
            return plain(request_handler, query)
        raw = server._decode_raw_data(server._read_raw_data(request_handler), request_handler)
        parts = []
        for piece in raw.split(b"--" + boundary.group(1).encode())[1:-1]:
            newline = b"\r\n" if piece.startswith(b"\r\n") else b"\n"
            # Less the line breaks after this boundary and before the next.
            piece = piece[len(newline) :].removesuffix(newline)
            head, _, body = piece.partition(newline + newline)
            kind = re.search(rb"(?im)^content-type:\s*([^;\r\n]+)", head)
            parts.append((kind.group(1).decode().strip() if kind else "", body))
        return {
            "meta": json.loads(parts[0][1]),
            "content": parts[1][1],
            "content-type": parts[1][0],
        }

    read_data.binary_safe = True
    server._read_data = read_data
