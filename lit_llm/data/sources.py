"""Text sources: local files (txt, jsonl/json, csv, tsv, parquet) or a Hugging Face hub dataset.

`load_text_dataset` returns a `datasets.DatasetDict` whose splits have exactly one column,
`text`, with no empty rows, and a fingerprint of the CONTENT (file bytes + loading options), so
caches keyed on it survive renames and notice edits.

Extra evaluation corpora (`eval_files={"wikitext2_test": ".../wiki.test.raw"}`) come back as
extra splits named `eval_<name>` in the same DatasetDict.

The task data modules (classification, seq2seq, QA) read their tables with the same pieces:
`resolve_files` (paths, globs, directories), `load_files` (one split from files of one format, all
columns) and `load_hub_dataset`.

Offline machines: a hub name triggers a ~1.5 s TCP probe of the hub; when it is unreachable,
`datasets`/`huggingface_hub` are switched to offline mode for the call (their module-level
`HF_HUB_OFFLINE` constants are patched, since the environment variable is read only at import),
so an uncached dataset fails at once with a `ConfigError` instead of ~20 s of retries.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import logging
import os
import re
import socket
import threading
from collections.abc import Mapping
from typing import Any, Iterator, Sequence, Union
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
    try:
        ds = datasets.load_dataset(builder, data_files={split: files}, split=split, cache_dir=hf_cache, **kwargs)
    except (KeyboardInterrupt, ConfigError):
        raise
    except Exception as e:  # parse errors surface as DatasetGenerationError, ArrowInvalid, ...
        cause = e.__cause__ or e
        raise ConfigError(
            f"{key}: could not read {files[:3]} as {ext} ({type(cause).__name__}: {str(cause)[:300]}); "
            f"check the file format or its extension."
        ) from e
    return ds, builder + repr(sorted(kwargs.items()))


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
    "file_extension",
    "hub_reachable", "hub_offline_mode", "load_hub_dataset",
]
