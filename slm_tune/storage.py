"""Where a study's runs are kept: a local folder, or object storage (s3://, gs://, ...) that every
node of a cluster can checkpoint to, both through pyarrow's filesystems (the ones Ray uses).

Ray writes a run to its storage path itself. slm-tune's driver reads it back: which runs a study
has, its study.json, and, for the files and plots, a local mirror of a run. The mirror has the
layout of a local run (OUTPUT_DIR/ray_results/RUN), so everything that reads a local run (the
export, compare, fit, the search plots) reads a mirrored one unchanged, on any machine that has
the credentials and nothing mounted. Credentials and endpoint come from the standard variables
the AWS SDKs and pyarrow read (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, or a profile), never from slm-tune's own settings.
"""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pyarrow.fs as pafs

from slm_tune.errors import UserError
from slm_tune.files import STUDY_FILE, atomic_write, json_object

GCS_RETRY_S = 15  # slm-tune's own calls to Google Cloud Storage give up after this (Ray keeps its own)


def is_remote(where: str | os.PathLike) -> bool:
    return "://" in str(where)


def mirror_root(output_dir: str | os.PathLike) -> Path:
    """Where the runs of object storage are mirrored: OUTPUT_DIR/ray_results, where a local study
    keeps its runs by default, so one output directory reads both alike."""
    return Path(output_dir).resolve() / "ray_results"


def local_run(run_path: str, output_dir: str | os.PathLike, fs: pafs.FileSystem | None = None) -> Path:
    """The local folder that holds a run: the run itself, or its mirror for object storage (a URI,
    or a path on a filesystem `fs` that is not the local one, as Ray's ResultGrid gives it)."""
    remote = is_remote(run_path) or (fs is not None and not isinstance(fs, pafs.LocalFileSystem))
    return mirror_root(output_dir) / run_path.rstrip("/").rsplit("/", 1)[-1] if remote else Path(run_path)


def read_study_file(run: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> dict[str, Any]:
    """A run's study.json, read the one way it is read everywhere: from a local folder, a URI
    (s3://bucket/ray_results/quick), or a path on a pyarrow filesystem (where Ray stores a running
    trial's run). {} when it is missing, damaged or unreachable: each caller says what it lacks."""
    try:
        if filesystem is None:
            return json_object(Storage(run).read_bytes(STUDY_FILE))
        with filesystem.open_input_stream(f"{run}/{STUDY_FILE}") as f:
            return json_object(f.read())
    except (OSError, UserError):
        return {}


def mirror_runs(storage: "Storage", output_dir: str | os.PathLike, studies: list[str] | None = None) -> list[Path]:
    """Mirror every run in the storage (of these studies) that has a study.json; their local folders."""
    out = []
    for name in storage.list_dirs():
        doc = read_study_file(storage.uri(name))
        if not doc or (studies and doc.get("study") not in studies):
            continue
        out.append(storage.mirror(name, mirror_root(output_dir) / name))
    return out


def _storage_error(where: str, e: Exception, doing: str) -> UserError:
    """pyarrow's (AWS SDK's) message -> one line that says what to fix."""
    text = " ".join(str(e).split())
    gcs = where.startswith(("gs://", "gcs://"))
    endpoint = None if gcs else os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    at = f" at {endpoint}" if endpoint else ""
    if re.search(r"curlCode: (6|7|28)|Could not resolve|Couldn't connect|Connection refused|Failed to connect"
                 r"|NETWORK_CONNECTION|timed out", text, re.I):
        check = ("your network and GOOGLE_APPLICATION_CREDENTIALS" if gcs else
                 "AWS_ENDPOINT_URL (or your network)")
        return UserError(f"cannot reach the object store{at} for {where} while {doing} ({text[:160]}); check "
                         f"{check}, or use a local --storage-path")
    if re.search(r"NoSuchBucket|bucket .*(does not exist|not found)|NOT_FOUND", text, re.I):
        return UserError(f"the bucket of {where} does not exist{at}; create it first (e.g. `aws s3 mb "
                         f"{_bucket_uri(where)}`), or check --storage-path")
    if re.search(r"ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|Forbidden|403"
                 r"|UNAUTHORIZED|credentials|OAuth2|access token", text, re.I):
        how = ("GOOGLE_APPLICATION_CREDENTIALS (or `gcloud auth application-default login`)" if gcs else
               "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or your credentials profile)")
        return UserError(f"access to {where}{at} was denied while {doing} ({text[:160]}); check {how}")
    return UserError(f"storage {where} failed while {doing} ({text[:200]}); check --storage-path and its credentials")


def _bucket_uri(where: str) -> str:
    scheme, rest = where.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


class Storage:
    """A storage path (local folder or URI) and the pyarrow filesystem that reaches it."""

    def __init__(self, where: str | os.PathLike):
        where = str(where)
        self.remote = is_remote(where)
        if self.remote:
            self.where = where.rstrip("/")
            try:
                if self.where.split("://", 1)[0] in ("gs", "gcs"):  # its default retries last 15 minutes
                    self.fs = pafs.GcsFileSystem(retry_time_limit=timedelta(seconds=GCS_RETRY_S))
                    self.root = self.where.split("://", 1)[1]
                else:
                    self.fs, self.root = pafs.FileSystem.from_uri(self.where)
            except (OSError, ValueError, TypeError) as e:  # unknown scheme, unreachable region lookup, ...
                raise _storage_error(self.where, e, "opening it") from None
            self.root = self.root.rstrip("/")
        else:
            self.where = str(Path(where).resolve())
            self.fs, self.root = pafs.LocalFileSystem(), self.where

    def __repr__(self) -> str:
        return f"Storage({self.where!r})"

    # --------------------------------------------------------------------- names

    def uri(self, *parts: str) -> str:
        """What Ray takes as a storage path (or a run's path) for these parts."""
        return "/".join([self.where, *parts]) if self.remote else str(Path(self.where, *parts))

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # --------------------------------------------------------------------- reading and writing

    def _call(self, doing: str, fn: Callable, *args):
        try:
            return fn(*args)
        except (OSError, ValueError) as e:
            if not self.remote:
                raise
            raise _storage_error(self.where, e, doing) from None

    def list_dirs(self, *parts: str) -> list[str]:
        """Names of the folders in a folder ([] when it does not exist)."""
        infos = self._call("listing it", self.fs.get_file_info,
                           pafs.FileSelector(self._path(*parts), allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def read_bytes(self, *parts: str) -> bytes | None:
        """A file's bytes; None when it does not exist."""
        path = self._path(*parts)
        if self._call("reading it", self.fs.get_file_info, path).type != pafs.FileType.File:
            return None
        with self._call("reading it", self.fs.open_input_stream, path) as f:
            return f.read()

    def write_bytes(self, data: bytes, *parts: str) -> None:
        if not self.remote:
            atomic_write(Path(self.where, *parts), lambda tmp: tmp.write_bytes(data))
            return
        with self._call("writing to it", self.fs.open_output_stream, self._path(*parts)) as f:
            f.write(data)  # an object store's put replaces the object whole: already atomic

    def check(self) -> None:
        """Before anything runs: the storage is reachable, its bucket exists, and it takes a write."""
        if not self.remote:
            return
        bucket = self.root.split("/", 1)[0]
        if self._call("looking up its bucket", self.fs.get_file_info, bucket).type == pafs.FileType.NotFound:
            raise _storage_error(self.where, OSError("NoSuchBucket"), "looking up its bucket")
        probe = f".slm-tune-write-test-{os.getpid()}-{time.time_ns()}"
        self.write_bytes(b"ok", probe)
        self._call("writing to it", self.fs.delete_file, self._path(probe))

    # --------------------------------------------------------------------- the local mirror

    def mirror(self, run: str, local: Path, skip: Callable[[str], bool] = lambda rel: False) -> Path:
        """Copy the run's files to `local` (same layout), each only when it is new or has changed
        (by size and time); files gone from the storage are left alone. Returns `local`."""
        local = Path(local)
        if not self.remote:
            raise ValueError("a local run is read where it is; it needs no mirror")
        base = self._path(run)
        infos = self._call("listing it", self.fs.get_file_info, pafs.FileSelector(base, recursive=True,
                                                                                  allow_not_found=True))
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            rel = info.path[len(base):].lstrip("/")
            if skip(rel):
                continue
            target = local / rel
            mtime = info.mtime.timestamp() if info.mtime is not None else None
            if target.is_file():
                st = target.stat()
                if st.st_size == info.size and (mtime is None or st.st_mtime >= mtime):
                    continue
            target.parent.mkdir(parents=True, exist_ok=True)

            def fetch(tmp: Path, path=info.path) -> None:
                pafs.copy_files(path, str(tmp), source_filesystem=self.fs,
                                destination_filesystem=pafs.LocalFileSystem())

            self._call("copying from it", atomic_write, target, fetch)
        return local
