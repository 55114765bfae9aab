"""Text sources: local files (txt, jsonl/json, csv, tsv, parquet) or a Hugging Face hub dataset.

`load_text_dataset` returns a `datasets.DatasetDict` whose splits have exactly one column,
`text`, with no empty rows, and a fingerprint of the CONTENT (file bytes + loading options), so
caches keyed on it survive renames and notice edits.

Extra evaluation corpora (`eval_files={"wikitext2_test": ".../wiki.test.raw"}`) come back as
extra splits named `eval_<name>` in the same DatasetDict.

The task data modules (classification, seq2seq, QA) read their tables with the same pieces:
`resolve_files` (paths, globs, directories), `load_files` (one split from files of one format, all
columns) and `load_hub_dataset`; modules that parse files themselves (QA, conversations, parallel text)
read them with `read_text` / `text_lines` / `read_parquet_rows`.

Bad files are refused before anything is cached, with a `ConfigError` that names the file, the line and
the fix: bytes that are not UTF-8 text (a binary file such as a PNG or a gzip archive under a .txt/.csv
name, text in another encoding), an empty file, a JSON Lines line that is not JSON, a CSV/TSV row with
more fields than the header, a file that is not parquet under a .parquet name.

Offline machines: a hub name triggers a ~1.5 s TCP probe of the hub; when it is unreachable,
`datasets`/`huggingface_hub` are switched to offline mode for the call (their module-level
`HF_HUB_OFFLINE` constants are patched, since the environment variable is read only at import),
so an uncached dataset fails at once with a `ConfigError` instead of ~20 s of retries.
"""
from __future__ import annotations

import bz2
import contextlib
import functools
import glob
import gzip
import json
import logging
import lzma
import os
import re
import shutil
import socket
import threading
from collections.abc import Mapping
from typing import IO, Any, Iterator, Sequence, Union
from urllib.parse import urlparse

import datasets

from lit_llm.data.base import require_choice, require_one_source
from lit_llm.errors import ConfigError
from lit_llm.utils_io import sha256_file, sha256_json

log = logging.getLogger("lit_llm")

FileSpec = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]

SOURCES_VERSION = 1  # bump when loading semantics change (invalidates content fingerprints)
SAMPLE_BY = ("line", "paragraph", "document")
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".lz4")
# extension -> (datasets builder, builder kwargs); text files also get `sample_by`
_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".txt": ("text", {}),
    ".raw": ("text", {}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t", "quoting": 3}),  # QUOTE_NONE: GLUE-style tsv has bare quotes
    ".parquet": ("parquet", {}),
}
SUPPORTED_EXTENSIONS = tuple(_BUILDERS)
_GLOB_CHARS = re.compile(r"[*?\[]")
_SPLIT_NAME = re.compile(r"^\w+$")


# ----------------------------------------------------------------------------- file resolution

def _data_dir_hint() -> str:
    data_dir = os.environ.get("LIT_LLM_DATA_DIR")
    state = f"it is {data_dir!r}" if data_dir else "it is unset"
    return f"relative paths start at {os.getcwd()}; is LIT_LLM_DATA_DIR / paths.data_dir set? {state}"


def _as_list(spec: Any) -> list[str]:
    if isinstance(spec, (str, os.PathLike)):
        return [os.fspath(spec)]
    if isinstance(spec, Sequence) and not isinstance(spec, bytes):
        return [os.fspath(s) for s in spec]
    raise ConfigError(f"data.files={spec!r}: expected a path, a glob, a list of them or a dict split -> paths.")


def file_extension(path: str) -> str:
    """Lower-case extension, looking through a compression suffix (`a.txt.gz` -> `.txt`)."""
    name = path.lower()
    for comp in _COMPRESSION:
        if name.endswith(comp):
            name = name[: -len(comp)]
            break
    return os.path.splitext(name)[1]


def resolve_files(spec: FileSpec, key: str = "data.files") -> list[str]:
    """Expand paths / globs / directories into a list of files (each glob sorted, order kept)."""
    out: list[str] = []
    for pattern in _as_list(spec):
        pattern = os.path.expanduser(pattern)
        if _GLOB_CHARS.search(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
        else:
            matches = [pattern] if os.path.exists(pattern) else []
        files: list[str] = []
        for m in matches:
            if os.path.isdir(m):
                files += sorted(
                    os.path.join(m, f) for f in os.listdir(m)
                    if file_extension(f) in _BUILDERS and os.path.isfile(os.path.join(m, f))
                )
            elif os.path.isfile(m):
                files.append(m)
        if not files:
            raise ConfigError(f"{key}: no file matches {pattern!r} ({_data_dir_hint()}); fix the path.")
        out += files
    return out


def _builder_for(files: list[str], key: str) -> tuple[str, str, dict[str, Any]]:
    """The `datasets` builder for files of ONE format (callers group files with `_format_groups`)."""
    exts = sorted({file_extension(f) for f in files})
    unknown = [e for e in exts if e not in _BUILDERS]
    if unknown:
        bad = [f for f in files if file_extension(f) in unknown][:3]
        raise ConfigError(
            f"{key}: unsupported file type {unknown[0] or '(no extension)'!r} ({bad[0]}); "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)} (optionally compressed: {', '.join(_COMPRESSION)})."
        )
    ext = exts[0]
    name, kwargs = _BUILDERS[ext]
    return ext, name, dict(kwargs)


def _format_groups(files: list[str], key: str) -> list[list[str]]:
    """Split `files` into runs of one loader each, in order of first appearance.

    `[a.txt, b.txt, c.tsv]` -> `[[a.txt, b.txt], [c.tsv]]`, so one split can mix plain text
    (e.g. books) with a column of a table (e.g. SST-2 sentences): each group is loaded with its
    own builder, cleaned to one `text` column, and the groups are concatenated.
    """
    _builder_for(files, key)  # unsupported extensions fail here, naming the file
    groups: dict[str, list[str]] = {}
    for f in files:
        name, kwargs = _BUILDERS[file_extension(f)]
        groups.setdefault(name + repr(kwargs), []).append(f)
    return list(groups.values())


# ----------------------------------------------------------------------------- reading bytes as text

_CHUNK = 1 << 20
# what a file that is not text starts with, for the message
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a zip archive (or a .docx/.xlsx, or a PyTorch checkpoint)"),
    (b"\x1f\x8b", "gzip-compressed data"), (b"BZh", "bzip2-compressed data"), (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data"), (b"PAR1", "a parquet file"), (b"\x80\x02", "a Python pickle"),
    (b"\xff\xfe", "UTF-16 text"), (b"\xfe\xff", "UTF-16 text"),
)


def _at(key: str | None, path: Any) -> str:
    """How messages start: `data.files: /x/a.txt` (the config key, when known, then the file)."""
    return f"{key}: {os.fspath(path)}" if key else os.fspath(path)


def binary_kind(head: bytes) -> str | None:
    """What a file that starts with `head` is when it is not text ("a PNG image", ...), None when unknown."""
    return next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)


def _open_bytes(path: str | os.PathLike, key: str | None) -> IO[bytes]:
    """The bytes of `path`, decompressed when its name ends in .gz/.bz2/.xz or its content is gzip/xz data
    (as `datasets` reads them)."""
    name = os.fspath(path).lower()
    with open(path, "rb") as f:
        magic = f.read(10)
    if name.endswith(".gz") or magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2") or (magic.startswith(b"BZh") and magic[4:] == b"1AY&SY"):
        return bz2.open(path, "rb")
    if name.endswith(".xz") or magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    if name.endswith((".zst", ".lz4")):
        raise ConfigError(f"{_at(key, path)}: {os.path.splitext(name)[1]} files are not read here; decompress it "
                          "(or use .gz, .bz2 or .xz).")
    return open(path, "rb")


def _not_text(path: Any, key: str | None, head: bytes, piece: bytes, pos: int, line: int) -> ConfigError:
    line += piece.count(b"\n", 0, pos)
    column = len(piece[piece.rfind(b"\n", 0, pos) + 1 : pos].decode("utf-8")) + 1  # in characters, as editors count
    kind = binary_kind(head)
    if kind:
        return ConfigError(f"{_at(key, path)} is {kind}, not UTF-8 text; check the path (or the file's extension).")
    return ConfigError(f"{_at(key, path)} is not UTF-8 text: line {line}, column {column} has the byte "
                       f"0x{piece[pos]:02x} (text in another encoding, e.g. Latin-1 or Windows-1252, or binary data); "
                       "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8) or fix that line.")


def _text_pieces(path: str | os.PathLike, key: str | None) -> Iterator[str]:
    """The text of a UTF-8 file in pieces of whole lines (a piece ends with a newline, except the last); a
    ConfigError naming the file, line and column at the first byte that is not UTF-8 text, or the first NUL."""
    line, rest, head = 1, b"", None
    try:
        with _open_bytes(path, key) as f:
            while True:
                chunk = f.read(_CHUNK)
                if head is None:
                    head = chunk[:16]
                data = rest + chunk
                cut = data.rfind(b"\n") + 1 if chunk else len(data)
                piece, rest = data[:cut], data[cut:]
                if piece:
                    try:
                        text = piece.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise _not_text(path, key, head, piece, e.start, line) from None
                    nul = text.find("\x00")
                    if nul >= 0:
                        kind = binary_kind(head)
                        raise ConfigError(
                            f"{_at(key, path)} is {kind}, not UTF-8 text; check the path (or the file's extension)."
                            if kind else f"{_at(key, path)} line {line + text.count(chr(10), 0, nul)} holds a NUL "
                            "byte (binary data, or UTF-16 text?); give a UTF-8 text file.")
                    yield text
                    line += text.count("\n")
                if not chunk:
                    return
    except (OSError, EOFError, lzma.LZMAError) as e:  # unreadable, or a damaged/truncated compressed file
        raise ConfigError(f"{_at(key, path)} could not be read ({type(e).__name__}: {e}); "
                          "check the file (a truncated or damaged copy?).") from None


def read_text(path: str | os.PathLike, key: str | None = None) -> str:
    """The whole text of a UTF-8 file (.gz/.bz2/.xz decompressed); a ConfigError naming `key`, the file, the line
    and the column when it is not UTF-8 text (see `_text_pieces`)."""
    return "".join(_text_pieces(path, key))


def text_lines(path: str | os.PathLike, key: str | None = None) -> Iterator[tuple[int, str]]:
    """(line number, line without its line end) of a UTF-8 text file, read as it goes (`read_text`'s errors)."""
    n = 0
    for piece in _text_pieces(path, key):
        lines = piece.split("\n")
        if lines[-1] == "":
            lines.pop()  # the piece's final newline
        for line in lines:
            n += 1
            yield n, line[:-1] if line.endswith("\r") else line


def nonblank_lines(path: str | os.PathLike, key: str | None = None, up_to: int = 2) -> int:
    """How many lines of `path` hold more than whitespace, counted up to `up_to` (0: an empty file, 1: a header
    alone); the whole file is checked, a ConfigError when it is not UTF-8 text (`read_text`'s)."""
    count = 0
    for piece in _text_pieces(path, key):
        if count < up_to and not piece.isspace():
            count += sum(1 for line in piece.split("\n", up_to) if line.strip())
    return min(count, up_to)


def check_parquet_file(path: str | os.PathLike, key: str | None = None) -> None:
    """A ConfigError unless `path` starts and ends with parquet's magic bytes `PAR1`."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
        f.seek(max(size - 4, 0))
        tail = f.read(4)
    if size < 12 or not head.startswith(b"PAR1") or tail != b"PAR1":
        what = None if head.startswith(b"PAR1") else (
            binary_kind(head) or ("empty" if size == 0 else "text" if _looks_like_text(head) else None))
        got = f"it is {what}" if what else "no PAR1 magic bytes at its start and end: a truncated copy?"
        raise ConfigError(f"{_at(key, path)} is not a parquet file ({got}); check the path or the file.")


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def read_parquet_rows(path: str | os.PathLike, key: str | None = None) -> list[dict[str, Any]]:
    """The rows of a parquet file as dicts; a ConfigError naming the file when it is not a readable parquet file."""
    import pyarrow.parquet as pq

    check_parquet_file(path, key)
    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # noqa: BLE001 - a damaged file: pyarrow's own error says what
        raise ConfigError(f"{_at(key, path)} could not be read as parquet ({type(e).__name__}: {str(e)[:200]}); "
                          "check the file (a truncated copy?).") from e


def json_problem(path: str | os.PathLike, key: str | None = None) -> str | None:
    """Where a JSON Lines file (or one JSON document) stops being what it should: "line 3 is not JSON
    (Expecting value at column 1)", "line 2 is a JSON list, not an object"; None when nothing is wrong."""
    text = read_text(path, key)
    try:
        json.loads(text)
        return None  # one JSON document
    except json.JSONDecodeError as whole:
        lines = text.split("\n")
        first = next((i for i, line in enumerate(lines) if line.strip()), None)
        if first is None:
            return "is empty"
        try:
            json.loads(lines[first])
        except json.JSONDecodeError:  # not JSON Lines: one document, broken where the parser stopped
            return f"is not valid JSON at line {whole.lineno}, column {whole.colno} ({whole.msg})"
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            return f"line {n} is not JSON ({e.msg} at column {e.colno})"
        if not isinstance(row, dict):
            return f"line {n} is a JSON {type(row).__name__}, not an object"
    return None


# ----------------------------------------------------------------------------- loading

def _is_text_feature(feature: Any) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def nonempty_rows(batch: dict[str, list]) -> list[bool]:
    """Batched `filter` predicate: rows whose `text` is not empty or whitespace."""
    return [bool(t) and not t.isspace() for t in batch["text"]]


def _clean(ds: datasets.Dataset, text_column: str, where: str, key: str = "data.text_column") -> datasets.Dataset:
    """Keep only `text_column` (renamed `text`), as strings, without empty/whitespace rows."""
    if text_column not in ds.column_names:
        raise ConfigError(
            f"{key}={text_column!r} is not a column of {where}; its columns are {ds.column_names}; "
            f"set {key}=<one of them>."
        )
    feature = ds.features[text_column]
    if not _is_text_feature(feature):
        raise ConfigError(
            f"{key}={text_column!r} in {where} holds {feature}, not text; "
            f"set {key} to a string column (columns: {ds.column_names})."
        )
    ds = ds.select_columns([text_column])
    if text_column != "text":
        ds = ds.rename_column(text_column, "text")
    ds = ds.filter(nonempty_rows, batched=True, batch_size=10_000, desc="dropping empty rows")
    if len(ds) == 0:
        raise ConfigError(
            f"{where} has no non-empty text in column {text_column!r}; check data.files, "
            f"{key} and data.sample_by."
        )
    return ds


def load_files(
    files: list[str], split: str, sample_by: str, hf_cache: str | None, key: str,
    builder_kwargs: Mapping[str, Any] | None = None,
) -> tuple[datasets.Dataset, str]:
    """One split from `files` (one format); `builder_kwargs` go to csv/tsv builders only
    (e.g. `column_names` for a file without a header). Returns the dataset and a loader tag."""
    ext, builder, kwargs = _builder_for(files, key)
    if builder == "text":
        kwargs["sample_by"] = sample_by
    elif builder == "csv" and builder_kwargs:
        kwargs.update(builder_kwargs)
    check_files(files, builder, key, "column_names" in kwargs)
    before = _builder_dirs(hf_cache, builder)
    try:
        ds = datasets.load_dataset(builder, data_files={split: files}, split=split, cache_dir=hf_cache, **kwargs)
    except (KeyboardInterrupt, ConfigError):
        raise
    except Exception as e:  # parse errors surface as DatasetGenerationError, ArrowInvalid, ...
        _drop_failed_builds(hf_cache, builder, before)
        raise ConfigError(_read_error(files, ext, builder, key, e, "column_names" in kwargs)) from e
    return ds, builder + repr(sorted(kwargs.items()))


def check_files(files: list[str], builder: str, key: str, column_names: bool = False) -> None:
    """Refuse, before `datasets` caches anything, what it would fail on obscurely or read wrongly: a file that is
    not UTF-8 text (pyarrow's JSON reader even takes invalid UTF-8 in and fails later), an empty table file, a
    CSV/TSV with a header and no rows (unless `column_names` are given: then there is no header), a .parquet that
    is not parquet. Plain text files may be blank, as long as one of them is not."""
    if builder == "parquet":
        for f in files:
            check_parquet_file(f, key)
        return
    # .zst/.lz4: `datasets` decompresses them (with the zstandard/lz4 packages), the standard library cannot
    lines = {f: 2 if f.lower().endswith((".zst", ".lz4")) else nonblank_lines(f, key) for f in files}
    blank = [f for f in files if lines[f] == 0]
    if blank and (builder != "text" or len(blank) == len(files)):
        raise ConfigError(f"{key}: {blank[0]} is empty (no non-empty text); fill it or drop it from {key}.")
    header_only = [f for f in files if lines[f] == 1] if builder == "csv" and not column_names else []
    if header_only:
        raise ConfigError(f"{key}: {header_only[0]} has no rows (a header line only); fill it or drop it from {key}.")


_RAGGED = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _read_error(files: list[str], ext: str, builder: str, key: str, e: Exception, named: bool = False) -> str:
    """The message for a file `datasets` could not read: the file and line where we can tell, else its error."""
    cause = e.__cause__ or e
    where = files[0] if len(files) == 1 else f"one of {files[:3]}{' ...' if len(files) > 3 else ''}"
    if "corresponds to no data" in str(cause):
        return f"{key}: {where} has no rows (a header line only?); fill it or drop it from {key}."
    ragged = _RAGGED.search(str(cause))
    if ragged:
        expected, line, saw = ragged.groups()
        quote = "remove the extra tab" if ext == ".tsv" else 'quote a field that holds a comma ("a, b")'
        header = "data.column_names names" if named else "the header has"
        return (f"{key}: {where} line {line} has {saw} fields but {header} {expected} (a ragged {ext[1:].upper()}); "
                f"fix that row ({quote}) or remove it.")
    if builder == "json":
        for f in files:
            problem = json_problem(f, key)
            if problem:
                return f"{key}: {f} {problem}; {'fix or remove that line' if problem.startswith('line') else 'fix the file'}."
    return (f"{key}: could not read {files[:3]} as {ext} ({type(cause).__name__}: {str(cause).strip()[:300]}); "
            "check the file format or its extension.")


def _builder_dirs(hf_cache: str | None, builder: str) -> set[str]:
    root = os.path.join(hf_cache, builder) if hf_cache else None
    return set(os.listdir(root)) if root and os.path.isdir(root) else set()


def _drop_failed_builds(hf_cache: str | None, builder: str, before: set[str]) -> None:
    """A failed `load_dataset` leaves `<hf_cache>/<builder>/<config>/` directories holding only lock files: remove
    those this call created (no data in them), so a failed read leaves no cache entry behind."""
    for name in _builder_dirs(hf_cache, builder) - before:
        path = os.path.join(hf_cache, builder, name)
        if not any(f.endswith((".json", ".arrow")) for _, _, names in os.walk(path) for f in names):
            shutil.rmtree(path, ignore_errors=True)


def _split_specs(files: Any, eval_files: Any) -> dict[str, tuple[Any, str]]:
    """{split name: (file spec, config key)} for data.files and data.eval_files."""
    specs: dict[str, tuple[Any, str]] = {}
    if files is None:  # hub source: only the evaluation corpora come from files
        pass
    elif isinstance(files, Mapping):
        if not files:
            raise ConfigError("data.files is an empty dict; give at least {train: <path or glob>}.")
        for split, spec in files.items():
            if not _SPLIT_NAME.match(str(split)):
                raise ConfigError(f"data.files: split name {split!r} must be letters, digits or '_'; rename it.")
            specs[str(split)] = (spec, f"data.files.{split}")
    else:
        specs["train"] = (files, "data.files")
    for name, spec in (eval_files or {}).items():
        if not _SPLIT_NAME.match(str(name)):
            raise ConfigError(f"data.eval_files: name {name!r} must be letters, digits or '_'; rename it.")
        specs[f"eval_{name}"] = (spec, f"data.eval_files.{name}")
    return specs


def load_text_dataset(
    files: FileSpec | Mapping[str, FileSpec] | None = None,
    hub_name: str | None = None,
    hub_config: str | None = None,
    text_column: str = "text",
    sample_by: str = "line",
    cache_dir: str | os.PathLike | None = None,
    eval_files: Mapping[str, FileSpec] | None = None,
) -> tuple[datasets.DatasetDict, str]:
    """Load text splits from files or the hub; return them (one `text` column) and a content fingerprint.

    - `files`: a path, glob, directory or list of them (-> split "train"), or a dict
      `{split: path/glob/list}`. File type by extension: .txt/.raw (one row per `sample_by`
      unit: line, paragraph = blank-line separated, document = whole file), .jsonl/.json, .csv,
      .tsv, .parquet; compressed variants (.gz, ...) too. One split may mix formats (books as .txt
      plus a .tsv column): each format is loaded on its own and the rows are concatenated in order.
    - `hub_name`/`hub_config`: `datasets.load_dataset(hub_name, hub_config)`, all its splits.
    - `eval_files`: `{name: path/glob/list}` loaded like `files` into splits `eval_<name>`.
    - `text_column`: the column of structured files / hub datasets holding the text (plain text
      files always give `text`, so a .raw evaluation corpus can go with a .jsonl training set).
    - `cache_dir`: datasets' own cache goes to `<cache_dir>/hf_datasets`.
    """
    require_choice("data.sample_by", sample_by, SAMPLE_BY)
    require_one_source(files, hub_name)
    hf_cache = os.path.join(os.fspath(cache_dir), "hf_datasets") if cache_dir is not None else None
    splits: dict[str, datasets.Dataset] = {}
    layout: dict[str, Any] = {}

    if hub_name is not None:
        raw = load_hub_dataset(hub_name, hub_config, hf_cache)
        for split, ds in raw.items():
            splits[split] = _clean(ds, text_column, f"data.hub_name={hub_name!r} split {split!r}")
            layout[split] = {"hub": hub_name, "config": hub_config, "fingerprint": ds._fingerprint}
        specs = _split_specs(None, eval_files)
    else:
        specs = _split_specs(files, eval_files)

    for split, (spec, key) in specs.items():
        parts, part_layout = [], []
        for paths in _format_groups(resolve_files(spec, key), key):
            ds, loader = load_files(paths, split, sample_by, hf_cache, key)
            column = "text" if loader.startswith("text") else text_column  # plain text has only `text`
            where = f"{key} ({', '.join(paths[:3])}{', ...' if len(paths) > 3 else ''})"
            parts.append(_clean(ds, column, where))
            part_layout.append({"files": [sha256_file(p) for p in paths], "loader": loader})
        if len(parts) > 1:  # builders disagree on string vs large_string: align on the first
            parts = [parts[0]] + [p.cast(parts[0].features) if p.features != parts[0].features else p for p in parts[1:]]
        splits[split] = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
        # one format keeps the layout (and so the fingerprints and caches) of earlier versions
        layout[split] = part_layout[0] if len(part_layout) == 1 else part_layout

    fingerprint = sha256_json(
        {"version": SOURCES_VERSION, "splits": layout, "text_column": text_column, "sample_by": sample_by}
    )
    for split, ds in splits.items():
        log.info("data split %s: %d rows", split, len(ds))
    return datasets.DatasetDict(splits), fingerprint


# ----------------------------------------------------------------------------- hub access

def _hub_endpoint() -> tuple[str, int]:
    try:
        from huggingface_hub import constants

        url = urlparse(constants.ENDPOINT)
    except Exception:  # pragma: no cover - very old huggingface_hub
        url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


@functools.lru_cache(maxsize=None)
def hub_reachable(timeout: float = 1.5) -> bool:
    """Can we open a TCP connection to the hub within `timeout` s? (cached per process)

    Runs in a daemon thread so that a slow DNS lookup (which ignores socket timeouts) cannot
    hold us longer than `timeout` either.
    """
    host, port = _hub_endpoint()
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.25)
    return bool(result and result[0])


def _offline_already() -> bool:
    return bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))


@contextlib.contextmanager
def hub_offline_mode() -> Iterator[None]:
    """Make `datasets` and `huggingface_hub` behave as with HF_HUB_OFFLINE=1 inside the block.

    Both libraries read the environment variable once, at import, into module constants
    (`huggingface_hub.constants.HF_HUB_OFFLINE`, read through `is_offline_mode()`;
    `datasets.config.HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE`), so setting os.environ now would
    do nothing: the constants are patched and restored afterwards.
    """
    targets: list[tuple[Any, str]] = []
    try:
        from huggingface_hub import constants as hub_constants

        targets.append((hub_constants, "HF_HUB_OFFLINE"))
    except Exception:  # pragma: no cover
        pass
    targets += [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE")]
    saved = [(obj, name, getattr(obj, name)) for obj, name in targets if hasattr(obj, name)]
    for obj, name, _ in saved:
        setattr(obj, name, True)
    try:
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def load_hub_dataset(name: str, config: str | None, hf_cache: str | None) -> datasets.DatasetDict:
    """`load_dataset(name, config)`, failing fast with a ConfigError when offline and uncached."""
    forced = _offline_already()
    offline = forced or not hub_reachable()
    why = "offline mode is on (HF_HUB_OFFLINE=1)" if forced else "the hub is unreachable"
    msg_offline = (
        f"data.hub_name={name!r} is not in the local Hugging Face cache and {why}; "
        f"set data.files=<local files> instead (or pre-download the dataset)"
    )
    caches = [hf_cache, None] if (offline and hf_cache is not None) else [hf_cache]
    errors: list[str] = []
    for cache in caches:  # offline: our cache first, then the default HF cache
        try:
            with hub_offline_mode() if offline else contextlib.nullcontext():
                out = datasets.load_dataset(name, config, cache_dir=cache)
        except (KeyboardInterrupt, ConfigError):
            raise
        except Exception as e:
            errors.append(f"{cache or 'default cache'}: {type(e).__name__}: {str(e)[:200]}")
            if not offline:
                raise ConfigError(
                    f"data.hub_name={name!r} (data.hub_config={config!r}) could not be loaded: "
                    f"{type(e).__name__}: {str(e)[:300]}; check the name/config or set data.files=<local files>."
                ) from e
            continue
        if isinstance(out, datasets.Dataset):  # a single-split dataset
            out = datasets.DatasetDict({"train": out})
        return out
    log.debug("hub dataset %s not found offline: %s", name, errors)
    raise ConfigError(msg_offline + f" (looked in: {', '.join(str(c or datasets.config.HF_DATASETS_CACHE) for c in caches)}).")


__all__ = [
    "SUPPORTED_EXTENSIONS", "SAMPLE_BY", "load_text_dataset", "load_files", "nonempty_rows", "resolve_files",
    "file_extension", "read_text", "text_lines", "nonblank_lines", "check_parquet_file", "check_files",
    "read_parquet_rows", "json_problem", "binary_kind",
    "hub_reachable", "hub_offline_mode", "load_hub_dataset",
]
