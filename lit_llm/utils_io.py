"""Crash-safe file writes and content hashes.

Every file or directory that a later run trusts (caches, metrics, run metadata) is written to a
temporary name in the same directory and renamed into place, so a run killed half-way leaves
either the old content or nothing, never a truncated file that looks valid.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

log = logging.getLogger("lit_llm")

PathLike = Union[str, "os.PathLike[str]"]

_CHUNK = 1 << 20  # 1 MiB reads when hashing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same directory and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.tmp-{os.getpid()}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (tmp file in the same dir + `os.replace`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 2, **dumps_kwargs: Any) -> Path:
    """Write `obj` as JSON (UTF-8, trailing newline) to `path` atomically."""
    dumps_kwargs.setdefault("ensure_ascii", False)
    return atomic_write_text(path, json.dumps(obj, indent=indent, **dumps_kwargs) + "\n")


@contextlib.contextmanager
def atomic_dir(final_path: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes `final_path` when the block succeeds.

    The temporary directory is `<final>.tmp-<pid>-<random>` next to `final_path` (same file
    system, so the rename is atomic). On an exception it is removed. If `final_path` already
    exists when the block ends (a concurrent writer won the race), the temporary copy is deleted
    and the existing directory is kept.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise


@contextlib.contextmanager
def build_lock(final_path: PathLike) -> Iterator[None]:
    """Hold a lock on `final_path` while building it, so that processes sharing a cache build it
    once: the first takes the lock and builds, the others wait here and then find it complete
    (check again inside the block). DDP ranks that start together (SLURM, torchrun) would otherwise
    all tokenize the same data. The lock file lives in the machine's temp directory, keyed by the
    entry's absolute path, so the cache holds nothing but its entries: processes on one machine build
    an entry once (as Lightning's prepare_data, once per node); machines sharing a network cache may
    each build it, and `atomic_dir` / the atomic writers keep the first complete copy. A file lock
    (fcntl) is released by the OS if its holder dies."""
    from filelock import FileLock, Timeout

    final = Path(final_path).resolve()
    locks = Path(tempfile.gettempdir()) / "lit_llm_locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / (hashlib.sha256(str(final).encode()).hexdigest()[:32] + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("cache: waiting for another process that is building %s", final)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def is_temp_path(path: PathLike) -> bool:
    """True for names made by `atomic_dir` / the atomic writers (`*.tmp-*`)."""
    return ".tmp-" in Path(path).name


def sha256_text(text: str) -> str:
    """Hex SHA-256 of the UTF-8 encoding of `text`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex SHA-256 of a canonical JSON dump (sorted keys): a stable key for a dict of settings."""
    return sha256_text(json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str))


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of one file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: Iterable[PathLike]) -> str:
    """Hex SHA-256 over the contents of `paths`, in the given order (file names do not count).

    Each file contributes its own digest, so ["ab", "c"] and ["a", "bc"] hash differently.
    """
    h = hashlib.sha256()
    for p in paths:
        h.update(sha256_file(p).encode("ascii"))
        h.update(b"\n")
    return h.hexdigest()
