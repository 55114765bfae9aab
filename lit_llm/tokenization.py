"""Tokenizers: one set of special tokens, trained (byte-level BPE, characters) or loaded, cached.

Every tokenizer is a `tokenizers.Tokenizer` (saved as `tokenizer.json`) whose first ids are
`SPECIAL_TOKENS` (0..6) for the ones we train. Tokenizers add no special tokens by themselves
(no post-processor template): data modules insert `<bos>`/`<eos>`/`<cls>`/`<sep>` ids explicitly,
so `tokenizer.encode_batch(texts)` gives the same ids whatever `add_special_tokens` says.

Trained tokenizers are cached under `<cache_dir>/tokenizers/<kind>-<key>/tokenizer.json`, keyed by the training
corpus' content fingerprint and the settings, so the second run loads instead of training; each entry carries a
manifest (size and checksum, `utils_io.cached_dir`), so a truncated or altered file is reported and retrained.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import tokenizers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from lit_llm.errors import ConfigError
from lit_llm.utils_io import cached_dir, sha256_json, sha256_text

log = logging.getLogger("lit_llm")

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>", "<cls>", "<sep>"]
PAD, UNK, BOS, EOS, MASK, CLS, SEP = SPECIAL_TOKENS
KINDS = ("bpe", "char", "pretrained")

# Bump when the way we build or train tokenizers changes: old cache entries are then ignored.
TOKENIZER_VERSION = 1

_BATCH = 1000  # texts per batch fed to the Rust trainer
TOKENIZER_FILE = "tokenizer.json"  # the file of a tokenizer cache entry


def token_id(tokenizer: Tokenizer, token: str) -> int:
    """Id of `token` (e.g. "<eos>"); KeyError if the tokenizer does not have it."""
    idx = tokenizer.token_to_id(token)
    if idx is None:
        raise KeyError(f"token {token!r} is not in the tokenizer's vocabulary")
    return idx


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """{"<pad>": 0, "<unk>": 1, ...} for this tokenizer."""
    return {tok: token_id(tokenizer, tok) for tok in SPECIAL_TOKENS}


def without_length_settings(tokenizer: Tokenizer) -> Tokenizer:
    """`tokenizer` with the padding and truncation a saved tokenizer.json may carry switched off (in place).

    Hugging Face files often enable them (sentence-transformers models pad every text to a fixed 128 and
    truncate): a `tokenizers.Tokenizer` loaded from such a file pads and cuts every encoding, so pad ids would
    be fed as content and end tokens dropped. `transformers` resets them on every call; we never use them:
    the data config decides lengths (`data.max_length`, ...)."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def tokenizer_from_file(path: str | os.PathLike) -> Tokenizer:
    """A tokenizer.json, without its padding/truncation settings (`without_length_settings`)."""
    return without_length_settings(Tokenizer.from_file(str(path)))


def tokenizer_from_str(text: str) -> Tokenizer:
    """A tokenizer's JSON (as stored in checkpoints), without its padding/truncation settings."""
    return without_length_settings(Tokenizer.from_str(text))


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """SHA-256 of the tokenizer's JSON: equal for a trained tokenizer and its saved/loaded copy."""
    return sha256_text(tokenizer.to_str())


def _batches(texts: Iterable[str] | Iterable[list[str]], size: int = _BATCH) -> Iterator[list[str]]:
    """Group texts into lists of `size`; items that are already lists/tuples are split up too."""
    batch: list[str] = []
    for item in texts:
        if isinstance(item, str):
            batch.append(item)
        else:
            batch.extend(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2, lowercase: bool = False) -> Tokenizer:
    """Byte-level BPE (GPT-2 style, no prefix space) with `SPECIAL_TOKENS` as ids 0..6.

    `texts` may yield strings or lists of strings. Every byte is in the initial alphabet, so any
    text encodes without `<unk>` and decodes back exactly (lower-cased with `lowercase=True`, an
    "uncased" vocabulary as BERT-uncased's: it matches lower-cased data such as SST-2 to cased books).
    """
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ConfigError(
            f"tokenizer.vocab_size={vocab_size} is too small for byte-level BPE: it needs at least "
            f"{len(SPECIAL_TOKENS) + 256} (7 special tokens + 256 bytes); raise tokenizer.vocab_size."
        )
    tok = Tokenizer(models.BPE())
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_batches(texts), trainer=trainer)
    _check_special_ids(tok)
    return tok


def train_char(texts: Iterable[str], lowercase: bool = False) -> Tokenizer:
    """Character vocabulary: `SPECIAL_TOKENS` then the sorted characters of `texts`.

    Built as a BPE model without merges and without pre-tokenizer (every character is one token,
    unknown characters become `<unk>`) plus a `Fuse` decoder, so `decode(encode(s)) == s` for any
    `s` made of known characters, whitespace included. (A WordLevel model with a per-character
    `Split` pre-tokenizer gives the same ids but encodes ~2x slower.)
    """
    chars: set[str] = set()
    for batch in _batches(texts):
        for text in batch:
            chars.update(text.lower() if lowercase else text)
    if not chars:
        raise ConfigError("tokenizer.kind=char: the training texts are empty; check data.files.")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(chars):
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    _check_special_ids(tok)
    return tok


def _check_special_ids(tok: Tokenizer) -> None:
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS))), f"special tokens got ids {ids}"


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a `tokenizer.json`; it must contain every token of `SPECIAL_TOKENS`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(
            f"tokenizer.path={str(path)!r}: no such file; point tokenizer.path at a tokenizer.json "
            f"(e.g. one saved in a run directory) or use tokenizer.kind=bpe|char to train one."
        )
    try:
        tok = tokenizer_from_file(p)
    except Exception as e:  # the Rust side raises a bare Exception on malformed JSON
        raise ConfigError(
            f"tokenizer.path={str(path)!r} is not a valid tokenizer.json ({e}); "
            f"use a file saved by `tokenizers.Tokenizer.save`."
        ) from e
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise ConfigError(
            f"tokenizer.path={str(path)!r} lacks the special tokens {missing}; lit-llm needs all of "
            f"{' '.join(SPECIAL_TOKENS)} (padding, end of document, masking, classification). Add them "
            f"(tokenizer.add_special_tokens([...]) then save) or train one with tokenizer.kind=bpe."
        )
    ids = special_ids(tok)
    if list(ids.values()) != list(range(len(SPECIAL_TOKENS))):
        log.info("tokenizer %s has special token ids %s (not 0..6)", p, ids)
    return tok


def tokenizer_cache_path(
    cache_dir: str | os.PathLike, kind: str, corpus_fingerprint: str, vocab_size: int, min_frequency: int,
    lowercase: bool = False,
) -> Path:
    """The cache entry `<cache_dir>/tokenizers/<kind>-<key>` (a directory: `tokenizer.json` and its manifest);
    the key covers everything that shapes the result."""
    key = sha256_json(
        {
            "kind": kind,
            # a character vocabulary does not depend on these: do not retrain when they change
            "vocab_size": vocab_size if kind == "bpe" else None,
            "min_frequency": min_frequency if kind == "bpe" else None,
            "corpus": corpus_fingerprint,
            **({"lowercase": True} if lowercase else {}),  # absent when False: earlier cache keys stay valid
            "special_tokens": SPECIAL_TOKENS,
            "version": TOKENIZER_VERSION,
            "tokenizers": ".".join(tokenizers.__version__.split(".")[:2]),
        }
    )
    return Path(cache_dir) / "tokenizers" / f"{kind}-{key[:32]}"


def get_tokenizer(
    kind: str,
    texts: Callable[[], Iterable[str]] | None,
    fingerprint: str,
    cache_dir: str | os.PathLike,
    vocab_size: int = 8192,
    min_frequency: int = 2,
    path: str | None = None,
    lowercase: bool = False,
) -> tuple[Tokenizer, str]:
    """Train (bpe, char) or load (pretrained) a tokenizer; return it and its fingerprint.

    `texts()` is called only when a trained tokenizer is not in the cache yet; `fingerprint`
    is the training corpus' content fingerprint (the cache key). The returned fingerprint is
    the SHA-256 of the tokenizer's JSON.
    """
    if kind not in KINDS:
        raise ConfigError(f"tokenizer.kind={kind!r} is not one of {list(KINDS)}; pick one of them.")
    if kind == "pretrained":
        if not path:
            raise ConfigError(
                "tokenizer.path is not set: tokenizer.kind=pretrained needs tokenizer.path=<tokenizer.json>."
            )
        if lowercase:
            raise ConfigError(
                "tokenizer.lowercase=true does not apply to tokenizer.kind=pretrained: the tokenizer file "
                f"{path} defines its own normalizer; drop tokenizer.lowercase.")
        tok = load_tokenizer(path)
        log.info("tokenizer loaded from %s (vocab %d)", path, tok.get_vocab_size())
        return tok, tokenizer_fingerprint(tok)

    entry = tokenizer_cache_path(cache_dir, kind, fingerprint, vocab_size, min_frequency, lowercase)
    trained: list[Tokenizer] = []

    def train(out_dir: Path) -> None:  # runs only when the entry is absent or damaged; DDP ranks train once
        if texts is None:
            raise ValueError("get_tokenizer: texts is required to train a tokenizer")
        _drop_unchecked_entry(entry)
        tok = (train_bpe(texts(), vocab_size, min_frequency, lowercase) if kind == "bpe"
               else train_char(texts(), lowercase))
        if kind == "bpe" and tok.get_vocab_size() < vocab_size:
            log.info(
                "tokenizer.vocab_size=%d: the corpus only supports %d tokens (min_frequency=%d)",
                vocab_size, tok.get_vocab_size(), min_frequency,
            )
        (out_dir / TOKENIZER_FILE).write_text(tok.to_str(), encoding="utf-8")
        trained.append(tok)

    cache_file = cached_dir(entry, train) / TOKENIZER_FILE
    if trained:
        tok = trained[0]
        log.info("tokenizer %s trained (vocab %d), saved to %s", kind, tok.get_vocab_size(), cache_file)
        return tok, tokenizer_fingerprint(tok)
    tok = tokenizer_from_file(cache_file)
    log.info("tokenizer %s loaded from cache %s (vocab %d)", kind, cache_file, tok.get_vocab_size())
    return tok, tokenizer_fingerprint(tok)


def _drop_unchecked_entry(entry: Path) -> None:
    """Delete `<entry>.json`, the single-file entry of the same key written before entries had a manifest:
    it cannot be checked, so it is retrained (once, with a warning) into `entry`."""
    old = entry.with_name(entry.name + ".json")
    if old.is_file():
        log.warning("cache: %s has no manifest (written by an older lit-llm); retraining it into %s", old, entry)
        old.unlink(missing_ok=True)


__all__ = [
    "SPECIAL_TOKENS", "PAD", "UNK", "BOS", "EOS", "MASK", "CLS", "SEP", "KINDS", "TOKENIZER_VERSION",
    "token_id", "special_ids", "tokenizer_fingerprint", "without_length_settings", "tokenizer_from_file",
    "tokenizer_from_str", "train_bpe", "train_char", "load_tokenizer",
    "tokenizer_cache_path", "get_tokenizer", "TOKENIZER_FILE",
]
