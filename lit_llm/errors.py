"""User-facing errors.

A `ConfigError` means the user asked for something that cannot work (a missing file, a bad
config value). Its message names the config key or file and says how to fix it; entry points
run under `cli_errors()`, which prints it in one line and exits with status 2 instead of
showing a traceback.
"""
from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


class ConfigError(ValueError):
    """Bad input from the user: message names the config key / file and the fix."""


@contextmanager
def cli_errors() -> Iterator[None]:
    """A command-line entry point's user errors: a `ConfigError` raised inside becomes one line
    `error: <message>` on stderr and exit status 2 (no traceback); other exceptions pass through.

    Either `with cli_errors(): ...` or, on an entry point function, `@cli_errors()` (under
    `@hydra.main`: Hydra unwraps decorated functions to find `config_path`).
    """
    try:
        yield
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def require_known_keys(d, known, prefix: str, what: str) -> None:
    """A ConfigError for the first key of `d` that is not in `known` ("model.n_heads is not an encoder option;
    known: ..."): a typo would otherwise be dropped without a word."""
    for key in d:
        if key not in known:
            raise ConfigError(f"{prefix}.{key} is not {what} option; known: {', '.join(known)}")


def renamed_keys(d: Mapping[str, Any], renames: Mapping[str, str], group: str) -> dict[str, Any]:
    """`d` as a dict with each old key of `renames` (old -> new) under its new name: for one release after
    a rename, old checkpoints and configs keep working. Reading an old key gives a deprecation message (a
    DeprecationWarning, hidden by default, and a warning on the "lit_llm" logger, which runs show) naming
    `<group>.<old>` and `<group>.<new>`; both given with different values is a ConfigError."""
    d = dict(d)
    for old, new in renames.items():
        if old not in d:
            continue
        value = d.pop(old)
        if new in d and d[new] != value:
            raise ConfigError(f"{group}.{old}={value!r} and {group}.{new}={d[new]!r} disagree: {group}.{old} is "
                              f"the old name of {group}.{new}; give {group}.{new} only")
        d[new] = value
        msg = (f"{group}.{old} is deprecated and will be removed in the next release: use {group}.{new} "
               f"(read as {group}.{new}={value!r})")
        warnings.warn(msg, DeprecationWarning, stacklevel=3)
        logging.getLogger("lit_llm").warning(msg)
    return d
