"""Run directories on object storage: any fsspec URL (``s3://``, ``gs://``, ``az://``, …).

A run directory given as a URL has a *working copy* on this machine (under
``$AUDITKIT_RUN_CACHE``, default ``~/.cache/auditkit/runs``). The URL is the truth:

- **Opening** a URL (:func:`attach`) brings the working copy level with it: every file is
  listed, files changed there (by ETag) are downloaded, files no longer there are deleted here.
  Activation shards are immutable (named after their first unit) and are fetched only when
  something reads them (:func:`fetch`), so ``auditkit report`` or ``check`` on an S3 run reads a
  few small files, and a driver that resumes on another machine lists what is stored without
  downloading it.
- **Writing** goes to the URL first and to the working copy second, through
  :func:`auditkit.rundir.storage.write_bytes_atomic`, the one writer of run files. One object PUT
  is atomic on S3 (readers see the old object or the whole new one), so no temporary object and
  no copy-then-delete ``mv`` is ever used.
- **Committing** a batch is write-then-publish: the shard is written, then its index part, the
  commit marker, is created with ``IfNoneMatch="*"`` (create-if-absent). A second writer that
  tries to commit the same batch is refused instead of storing units twice.

Credentials and endpoints come from the usual chain of the filesystem's library (for S3:
``AWS_*`` variables, ``~/.aws/config``, instance roles; ``AWS_ENDPOINT_URL`` for an
S3-compatible server), never from the spec. fsspec and its backends are an optional extra
(``pip install 'auditkit[s3]'``); nothing imports them for a local run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from auditkit.errors import UsageError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")

SHARD_SUFFIX = ".safetensors"
"""Files that are immutable once written and are fetched only when read."""

_STATE = ".auditkit-mirror.json"
"""The working copy's record of the ETag of every file it holds."""


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a remote run directory (a URL other than ``file://``)."""
    found = _SCHEME.match(str(location)) if isinstance(location, str) else None
    return found is not None and found.group(1).lower() not in ("file", "local")


def cache_root() -> Path:
    """Where working copies of remote run directories live."""
    given = os.environ.get("AUDITKIT_RUN_CACHE")
    return Path(given) if given else Path.home() / ".cache" / "auditkit" / "runs"


class StorageError(UsageError):
    """A remote run directory could not be listed, read or written."""

    exit_code = 2


class Mirror:
    """One remote run directory and its working copy."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError:
            raise UsageError(
                f"{url}: a run directory on object storage needs fsspec and its backend.",
                hint="pip install 'auditkit[s3]' (or your store's fsspec backend, e.g. gcsfs).",
            ) from None
        self.url = url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            scheme = self.url.split("://", 1)[0]
            raise UsageError(
                f"{self.url}: no filesystem for {scheme}:// ({exc}).",
                hint="pip install 'auditkit[s3]' for s3://, gcsfs for gs://, adlfs for az://.",
            ) from None
        self.root = self.root.rstrip("/")
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        self.local = cache_root() / f"{digest}-{Path(self.root).name or 'run'}"
        self._etags: dict[str, str] = {}

    # --- names --------------------------------------------------------------------------------

    def relative(self, path: Path) -> str | None:
        """``path``'s name inside the run (``results/lean.parquet``), or None when it is outside
        the working copy."""
        try:
            return Path(os.path.abspath(path)).relative_to(self.local).as_posix()
        except ValueError:
            return None

    def remote(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def url_of(self, path: Path) -> str:
        """The URL of a file of the working copy."""
        relative = self.relative(path)
        return self.url if not relative or relative == "." else f"{self.url}/{relative}"

    def _fail(self, action: str, target: str, exc: BaseException) -> StorageError:
        return StorageError(
            f"{self.url}: could not {action} {target} ({type(exc).__name__}: {exc}).",
            hint="check the URL, that the bucket exists, and the store's credentials in the "
            "environment (for S3: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws, and "
            "AWS_ENDPOINT_URL for an S3-compatible server). Work already stored there is kept.",
        )

    # --- reading ------------------------------------------------------------------------------

    def listing(self) -> dict[str, dict[str, Any]]:
        """Every file under the URL, by name inside the run, with fsspec's details."""
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return {}
        except Exception as exc:
            raise self._fail("list", self.url, exc) from None
        files: dict[str, dict[str, Any]] = {}
        for name, info in found.items():
            relative = name[len(self.root) + 1 :] if name.startswith(self.root + "/") else None
            if relative and info.get("type", "file") == "file":
                files[relative] = info
        return files

    @staticmethod
    def _tag(info: dict[str, Any]) -> str | None:
        tag = info.get("ETag") or info.get("etag") or info.get("md5_checksum")
        return str(tag).strip('"') if tag else None

    def pull(self) -> None:
        """Make the working copy equal to the URL (shards are left to :meth:`fetch`)."""
        remote = self.listing()
        self.local.mkdir(parents=True, exist_ok=True)
        state_file = self.local / _STATE
        try:
            self._etags = json.loads(state_file.read_text()) if state_file.is_file() else {}
        except (OSError, ValueError):
            self._etags = {}
        for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
            relative = path.relative_to(self.local).as_posix()
            if relative == _STATE:
                continue
            info = remote.get(relative)
            stale = info is None or (
                not relative.endswith(SHARD_SUFFIX)
                and (self._tag(info) is None or self._etags.get(relative) != self._tag(info))
            )
            if stale or (info is not None and path.stat().st_size != info.get("size")):
                path.unlink()
                self._etags.pop(relative, None)
        for relative, info in sorted(remote.items()):
            if not relative.endswith(SHARD_SUFFIX):
                self._download(relative, info)
        self._save_state()

    def _download(self, relative: str, info: dict[str, Any] | None = None) -> None:
        target = self.local / relative
        if target.is_file():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.download")
        try:
            self.fs.get_file(self.remote(relative), str(partial))
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise self._fail("read", relative, exc) from None
        os.replace(partial, target)
        tag = self._tag(info or {})
        if tag:
            self._etags[relative] = tag

    def fetch(self, path: Path) -> None:
        """Download one file of the run (a shard) if the working copy lacks it."""
        relative = self.relative(path)
        if relative and not path.is_file():
            self._download(relative)

    def _save_state(self) -> None:
        (self.local / _STATE).write_text(json.dumps(self._etags, sort_keys=True))

    # --- writing ------------------------------------------------------------------------------

    def put(self, path: Path, data: bytes, *, create_only: bool = False) -> None:
        """Write one file to the URL: one PUT (atomic on S3), or a create-if-absent PUT when
        ``create_only`` (a commit marker)."""
        relative = self.relative(path)
        if relative is None:
            return
        try:
            out = self.fs.pipe_file(
                self.remote(relative), data, mode="create" if create_only else "overwrite"
            )
        except OSError as exc:  # FileExistsError, or a 412 some backends do not translate
            if isinstance(exc, FileExistsError) or "PreconditionFailed" in str(exc):
                raise StorageError(
                    f"{self.url}/{relative} was already committed by another writer.",
                    hint="two auditkit drivers are writing one run directory; stop one of them "
                    "(the units it stored are kept) and rerun the same command to resume.",
                ) from None
            raise self._fail("write", relative, exc) from None
        except Exception as exc:
            raise self._fail("write", relative, exc) from None
        tag = out.get("ETag") if isinstance(out, dict) else None
        if tag:
            self._etags[relative] = str(tag).strip('"')
        else:
            self._etags.pop(relative, None)
        self._save_state()

    def delete(self, path: Path) -> None:
        """Remove one file from the URL (absent is fine)."""
        relative = self.relative(path)
        if relative is None:
            return
        try:
            self.fs.rm_file(self.remote(relative))
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self._fail("delete", relative, exc) from None
        self._etags.pop(relative, None)


_MIRRORS: dict[Path, Mirror] = {}


def attach(url: str) -> Path:
    """Open the run directory at ``url``: its working copy, level with the URL, and registered so
    that every write of a run file under it goes to the URL."""
    mirror = Mirror(url)
    for known in _MIRRORS.values():
        if known.url == mirror.url:
            known.pull()
            return known.local
    mirror.pull()
    _MIRRORS[mirror.local] = mirror
    return mirror.local


def mirror_of(path: Path) -> Mirror | None:
    """The remote run directory ``path`` belongs to, if any."""
    if not _MIRRORS:
        return None
    absolute = Path(os.path.abspath(path))
    for root, mirror in _MIRRORS.items():
        if absolute == root or root in absolute.parents:
            return mirror
    return None


def detach_all() -> None:
    """Forget every attached run directory (their working copies stay, as a cache)."""
    _MIRRORS.clear()


def location(text: str | os.PathLike[str]) -> Path | str:
    """A run directory as given: a URL stays text; ``file://`` and plain paths become a Path."""
    if isinstance(text, str) and is_url(text):
        return text
    if isinstance(text, str) and text.lower().startswith("file://"):
        return Path(text[len("file://") :])
    return Path(text)


def local_path(given: str | os.PathLike[str]) -> Path:
    """A run directory given on the command line or to the API, as a local path: a URL is
    attached (its working copy), anything else is a path."""
    found = location(given)
    return attach(found) if isinstance(found, str) else found


def with_urls(text: str) -> str:
    """``text`` with every working-copy path replaced by its URL (errors name files as the user
    gave them)."""
    for root, mirror in _MIRRORS.items():
        text = text.replace(str(root), mirror.url)
    return text


def display(path: Path) -> str:
    """How to show a run file to the user: its URL for a remote run, else its absolute path."""
    mirror = mirror_of(path)
    return mirror.url_of(path) if mirror else str(Path(path).resolve())
