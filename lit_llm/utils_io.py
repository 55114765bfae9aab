"""Crash-safe file writes and content hashes.

Every file or directory that a later run trusts (caches, metrics, run metadata) is written to a
temporary name in the same directory and renamed into place, so a run killed half-way leaves
either the old content or nothing, never a truncated file that looks valid.

Cache entries (`cached_dir`) also carry a manifest (`lit_llm_manifest.json`: every file's size and xxh3-128
checksum), written last inside the temporary directory, so an entry truncated or altered after it was written
(a full disk, a copy cut short, a bad block) is found when it is next loaded, reported and rebuilt.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import xxhash

log = logging.getLogger("lit_llm")

PathLike = Union[str, "os.PathLike[str]"]

_CHUNK = 1 << 20  # 1 MiB reads when hashing
_CHECK_CHUNK = 4 << 20  # 4 MiB reads for manifest checksums (one reused buffer: memory stays flat)

MANIFEST_FILE = "lit_llm_manifest.json"
MANIFEST_VERSION = 1
CHECKSUM = "xxh3_128"  # ~8 GB/s from the page cache here (blake2b: 0.85, sha256: 1.5)


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

    The temporary directory is `<final>.tmp-<pid>@<host>-<random>` next to `final_path` (same file
    system, so the rename is atomic). On an exception it is removed. If `final_path` already
    exists when the block ends (a concurrent writer won the race), the temporary copy is deleted
    and the existing directory is kept. Temporary directories of `final_path` left by a process of
    this host that no longer lives (killed while it built the entry) are deleted first.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temp_dirs(final)
    tmp = final.parent / f"{final.name}.tmp-{os.getpid()}@{socket.gethostname()}-{secrets.token_hex(4)}"
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


_TEMP_OWNER = re.compile(r"\.tmp-(\d+)@(.+)-[0-9a-f]{8}$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_orphaned_temp_dirs(final_path: PathLike) -> list[Path]:
    """Delete the temporary directories of `final_path` (`atomic_dir`'s) whose process, on this host, is gone:
    a build killed half-way. Those of live processes, and of other hosts sharing the file system, stay."""
    final = Path(final_path)
    removed = []
    if not final.parent.is_dir():
        return removed
    host = socket.gethostname()
    for p in final.parent.glob(f"{glob.escape(final.name)}.tmp-*"):
        owner = _TEMP_OWNER.search(p.name)
        if owner and owner.group(2) == host and not _pid_alive(int(owner.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            log.info("cache: removed %s, left by process %s that is gone (killed while building)", p.name,
                     owner.group(1))
    return removed


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


# ----------------------------------------------------------------------------- cache entries and their manifests

def file_checksum(path: PathLike) -> str:
    """Hex xxh3-128 of one file's content (`CHECKSUM`), read in 4 MiB chunks into one buffer. Not a
    cryptographic hash: it finds damage (truncation, flipped bytes), not tampering."""
    h = xxhash.xxh3_128()
    buf = bytearray(_CHECK_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _entry_files(directory: Path) -> list[str]:
    """Relative POSIX paths of the regular files under `directory` (sorted), the manifest left out."""
    out = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in files:
            p = Path(root) / name
            if p.is_file() and not p.is_symlink():
                out.append(p.relative_to(directory).as_posix())
    return sorted(rel for rel in out if rel != MANIFEST_FILE)


def write_manifest(directory: PathLike) -> Path:
    """Write `<directory>/lit_llm_manifest.json`: the size and checksum of every file under `directory`.
    Call it last, when the directory is complete (inside `atomic_dir`, so the manifest is part of the entry)."""
    directory = Path(directory)
    files = {rel: {"size": (directory / rel).stat().st_size, "checksum": file_checksum(directory / rel)}
             for rel in _entry_files(directory)}
    return atomic_write_json(directory / MANIFEST_FILE,
                             {"version": MANIFEST_VERSION, "checksum": CHECKSUM, "files": files})


def verify_manifest(directory: PathLike) -> list[str]:
    """What is wrong with `directory` against its manifest, one short phrase per problem; [] when every
    recorded file is there with its size and checksum (files the manifest does not list are not checked: a
    loader may add its own). Sizes are compared first; checksums are read only when every size matches."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"no {MANIFEST_FILE}"]
    except (OSError, ValueError) as e:
        return [f"{MANIFEST_FILE} unreadable ({type(e).__name__})"]
    try:
        if (manifest["version"], manifest["checksum"]) != (MANIFEST_VERSION, CHECKSUM):
            raise ValueError("another manifest version or checksum")
        files = {str(rel): (int(want["size"]), str(want["checksum"])) for rel, want in manifest["files"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return [f"{MANIFEST_FILE} of an unknown format"]
    problems = []
    for rel, (want, _) in files.items():
        try:
            size = (directory / rel).stat().st_size
        except FileNotFoundError:
            problems.append(f"{rel}: missing")
            continue
        if size < want:
            problems.append(f"{rel}: {size:,} of {want:,} bytes, truncated")
        elif size > want:
            problems.append(f"{rel}: {size:,} bytes where {want:,} were written")
    if problems:
        return problems
    return [f"{rel}: checksum differs, altered" for rel, (_, checksum) in files.items()
            if file_checksum(directory / rel) != checksum]


def discard_dir(path: PathLike) -> None:
    """Remove the directory `path` so that no reader sees it half deleted: renamed aside to a `.tmp-` name
    (atomic; what `is_temp_path` skips), then deleted. Nothing happens when it is already gone."""
    path = Path(path)
    aside = path.parent / f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}-discarded"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:  # a file where the entry should be
        aside.unlink(missing_ok=True)


def _damage_report(final: Path, problems: list[str], shown: int = 3) -> str:
    if problems == [f"no {MANIFEST_FILE}"]:
        return f"cache: {final} has no {MANIFEST_FILE} (written by an older lit-llm, or the file was deleted); rebuilding it"
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return f"cache: {final} is damaged ({'; '.join(problems[:shown])}{more}); rebuilding it"


def cached_dir(final_path: PathLike, build: Callable[[Path], Any]) -> Path:
    """The cache entry directory `final_path`, checked against its manifest, built when absent or damaged.

    `build(tmp)` writes the entry's files into a temporary directory (`atomic_dir`); the manifest is written
    last and the directory renamed into place. An entry that fails `verify_manifest` (a file missing, truncated
    or altered; no manifest: written before entries had one) gets one warning naming it and what is wrong, is
    discarded (`discard_dir`) and rebuilt. Processes sharing the cache build it once (`build_lock`); the check
    is repeated inside the lock, so the one that waited finds the rebuilt entry and says nothing."""
    final = Path(final_path)
    if final.is_dir() and not verify_manifest(final):
        return final
    with build_lock(final):
        if final.exists():
            problems = verify_manifest(final)
            if not problems:
                return final
            log.warning("%s", _damage_report(final, problems))
            discard_dir(final)
        with atomic_dir(final) as tmp:
            build(tmp)
            write_manifest(tmp)
    return final


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
