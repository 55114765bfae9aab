"""Bad data files and rows, for every data family: each is refused with a ConfigError that names the config key, the
file (and the line), and caches nothing. The README's table of bad inputs lists these cases."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from lit_llm.checkpointing import check_compatible, load_pretrained, read_checkpoint
from lit_llm.data.classification import ClassificationDataModule
from lit_llm.data.preference import PreferenceDataModule
from lit_llm.data.qa import QADataModule
from lit_llm.data.seq2seq import Seq2SeqDataModule
from lit_llm.data.sft import SFTDataModule
from lit_llm.data.sources import load_text_dataset
from lit_llm.errors import ConfigError
from lit_llm.evaluation import open_checkpoint

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(200))
LATIN1 = "café".encode("latin-1")  # 'é' is the byte 0xe9: not UTF-8

# a good row of each family (the bad files below break one of them)
CLS_ROWS = "sentence,label\n" + "".join(f"film {i},{i % 2}\n" for i in range(20))
QA_ROW = {"id": "1", "context": "Paris is in France.", "question": "Where is Paris?",
          "answers": {"text": ["France"], "answer_start": [12]}}
CHAT_ROW = {"prompt": "Hi?", "completion": "Hello."}
PAIR_ROW = {"prompt": "Q", "chosen": "a", "rejected": "b"}

# family -> (config key of the files, reads `path` into its splits)
FAMILIES = {
    "corpus": ("data.files", lambda path, cache: load_text_dataset(files=path, cache_dir=cache)),
    "classification": ("data.train_files", lambda path, cache: ClassificationDataModule(
        train_files=path, label_names=["neg", "pos"], cache_dir=cache).load_raw()),
    "qa": ("data.train_files", lambda path, cache: QADataModule(train_files=path, cache_dir=cache).load_raw()),
    "seq2seq": ("data.train_files", lambda path, cache: Seq2SeqDataModule(train_files=path, cache_dir=cache).load_raw()),
    "parallel": ("data.train_files", lambda path, cache: Seq2SeqDataModule(  # path: <stem>.de, beside <stem>.en
        train_files=str(path)[:-3], source_lang="de", target_lang="en", cache_dir=cache).load_raw()),
    "sft": ("data.files", lambda path, cache: SFTDataModule(files=path, cache_dir=cache).load_raw()),
    "preference": ("data.train_files", lambda path, cache: PreferenceDataModule(train_files=path,
                                                                                 cache_dir=cache).load_raw()),
}


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def truncated_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["a"] * 50, "completion": ["b"] * 50}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# (id, family, file name, content: bytes | str | a function that writes the file, fragments of the message)
CASES = [
    # -- binary data under a text file's name
    ("corpus-png-as-txt", "corpus", "c.txt", PNG, ["c.txt is a PNG image, not UTF-8 text"]),
    ("corpus-random-bytes-as-txt", "corpus", "r.txt", bytes(range(128, 256)),
     ["r.txt is not UTF-8 text: line 1, column 1 has the byte 0x80"]),
    ("classification-png-as-csv", "classification", "t.csv", PNG, ["t.csv is a PNG image"]),
    ("classification-pdf-as-tsv", "classification", "t.tsv", PDF, ["t.tsv is a PDF document"]),
    ("qa-png-as-json", "qa", "q.json", PNG, ["q.json is a PNG image"]),
    ("seq2seq-zip-as-csv", "seq2seq", "s.csv", ZIP, ["s.csv is a zip archive"]),
    ("parallel-png-as-de", "parallel", "pair.de", PNG, ["pair.de is a PNG image"]),
    ("sft-png-as-jsonl", "sft", "chats.jsonl", PNG, ["chats.jsonl is a PNG image"]),
    ("sft-zip-as-json", "sft", "chats.json", ZIP, ["chats.json is a zip archive"]),
    ("preference-png-as-jsonl", "preference", "pairs.jsonl", PNG, ["pairs.jsonl is a PNG image"]),
    ("corpus-text-as-parquet", "corpus", "c.parquet", "just text\n", ["c.parquet is not a parquet file (it is text)"]),
    ("classification-png-as-parquet", "classification", "t.parquet", PNG,
     ["t.parquet is not a parquet file (it is a PNG image)"]),
    ("qa-png-as-parquet", "qa", "q.parquet", PNG, ["q.parquet is not a parquet file (it is a PNG image)"]),
    ("sft-truncated-parquet", "sft", "chats.parquet", truncated_parquet,
     ["chats.parquet is not a parquet file", "truncated copy?"]),
    # -- text that is not UTF-8 (Latin-1, UTF-16, a NUL byte)
    ("corpus-latin1-txt", "corpus", "c.txt", b"line one\n" + LATIN1 + b" au lait\n",
     ["c.txt is not UTF-8 text: line 2, column 4 has the byte 0xe9", "iconv"]),
    ("corpus-latin1-jsonl", "corpus", "c.jsonl", b'{"text": "ok"}\n{"text": "' + LATIN1 + b'"}\n',
     ["c.jsonl is not UTF-8 text: line 2, column 14"]),
    ("corpus-utf16-txt", "corpus", "c.txt", "hello\nworld\n".encode("utf-16"), ["c.txt is UTF-16 text, not UTF-8"]),
    ("corpus-nul-byte-txt", "corpus", "c.txt", b"hello\nwor\x00ld\n", ["c.txt line 2 holds a NUL byte"]),
    ("classification-latin1-csv", "classification", "t.csv", CLS_ROWS.encode() + LATIN1 + b",1\n",
     ["t.csv is not UTF-8 text: line 22, column 4"]),
    ("qa-latin1-jsonl", "qa", "q.jsonl", jsonl(QA_ROW).encode() + b'{"context": "' + LATIN1 + b'"}\n',
     ["q.jsonl is not UTF-8 text: line 2, column 17"]),
    ("qa-latin1-json", "qa", "q.json", b'{"data": [\n{"title": "' + LATIN1 + b'"}]}', ["q.json is not UTF-8 text: line 2"]),
    ("seq2seq-latin1-csv", "seq2seq", "s.csv", b"source,target\nok,fine\n" + LATIN1 + b",x\n",
     ["s.csv is not UTF-8 text: line 3, column 4"]),
    ("parallel-latin1-de", "parallel", "pair.de", b"hallo\n" + LATIN1 + b"\n", ["pair.de is not UTF-8 text: line 2"]),
    ("sft-latin1-jsonl", "sft", "chats.jsonl", jsonl(CHAT_ROW).encode() + b'{"prompt": "' + LATIN1 + b'"}\n',
     ["chats.jsonl is not UTF-8 text: line 2, column 16"]),
    ("preference-latin1-jsonl", "preference", "pairs.jsonl", b'{"prompt": "' + LATIN1 + b'"}\n',
     ["pairs.jsonl is not UTF-8 text: line 1"]),
    # -- ragged CSV/TSV: a row with more fields than the header
    ("corpus-ragged-csv", "corpus", "c.csv", "text,label\na,1\nb,2,3\n",
     ["c.csv line 3 has 3 fields but the header has 2 (a ragged CSV)", "quote a field"]),
    ("classification-ragged-csv", "classification", "t.csv", CLS_ROWS + "one, two,1\n",
     ["t.csv line 22 has 3 fields but the header has 2 (a ragged CSV)"]),
    ("classification-ragged-tsv", "classification", "t.tsv", CLS_ROWS.replace(",", "\t") + "x\t1\textra\n",
     ["t.tsv line 22 has 3 fields but the header has 2 (a ragged TSV)", "remove the extra tab"]),
    ("seq2seq-ragged-csv", "seq2seq", "s.csv", "source,target\na,b\nc,d,e\n", ["s.csv line 3 has 3 fields"]),
    # -- a JSON Lines line that is not JSON (or not an object)
    ("corpus-jsonl-line-not-json", "corpus", "c.jsonl", jsonl({"text": "a"}, {"text": "b"}, "{oops"),
     ["c.jsonl line 3 is not JSON (Expecting property name", "fix or remove that line"]),
    ("corpus-jsonl-line-a-list", "corpus", "c.jsonl", jsonl({"text": "a"}, "[1, 2]"),
     ["c.jsonl line 2 is a JSON list, not an object"]),
    ("classification-jsonl-line-not-json", "classification", "t.jsonl",
     jsonl(*({"sentence": f"s{i}", "label": i % 2} for i in range(5)), '{"sentence": "x", "label": }'),
     ["t.jsonl line 6 is not JSON (Expecting value at column 28)"]),
    ("classification-json-broken-document", "classification", "t.json",
     '[\n  {"sentence": "a", "label": 0},\n  {"sentence": "b" "label": 1}\n]\n',
     ["t.json is not valid JSON at line 3, column 20"]),
    ("seq2seq-jsonl-line-not-json", "seq2seq", "s.jsonl", jsonl({"source": "a", "target": "b"}, "{oops"),
     ["s.jsonl line 2 is not JSON"]),
    ("qa-jsonl-line-not-json", "qa", "q.jsonl", jsonl(QA_ROW, '{"id": "2", "context": '),
     ["q.jsonl: line 2 is not valid JSON"]),
    ("sft-jsonl-line-not-json", "sft", "chats.jsonl", jsonl(CHAT_ROW, CHAT_ROW, "{oops"),
     ["chats.jsonl, line 3: not valid JSON"]),
    ("preference-jsonl-line-not-json", "preference", "pairs.jsonl", jsonl(PAIR_ROW, "not json"),
     ["pairs.jsonl, line 2: not valid JSON"]),
    # -- empty files and splits
    ("corpus-empty-txt", "corpus", "c.txt", b"", ["c.txt is empty"]),
    ("corpus-empty-jsonl", "corpus", "c.jsonl", "\n\n", ["c.jsonl is empty", "fill it or drop it from data.files"]),
    ("classification-empty-tsv", "classification", "t.tsv", b"", ["t.tsv is empty"]),
    ("classification-header-only-csv", "classification", "t.csv", "sentence,label\n", ["t.csv has no rows"]),
    ("qa-empty-json", "qa", "q.json", b"", ["q.json is empty"]),
    ("qa-no-articles-json", "qa", "q.json", '{"data": []}', ["q.json' holds no questions"]),
    ("seq2seq-header-only-csv", "seq2seq", "s.csv", "source,target\n", ["s.csv has no rows"]),
    ("parallel-empty-files", "parallel", "pair.de", b"", ["pair.de and", "pair.en are empty"]),
    ("sft-empty-jsonl", "sft", "chats.jsonl", b"", ["chats.jsonl holds no conversations"]),
    ("preference-empty-jsonl", "preference", "pairs.jsonl", b"", ["pairs.jsonl holds no preference pairs"]),
    ("preference-every-pair-dropped", "preference", "pairs.jsonl",
     jsonl(*[{"chosen": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "a"}],
              "rejected": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "b"}]}] * 30),
     ["the train split has no preference pairs (30 rows, 30 dropped for a prompt mismatch); check data.train_files"]),
    # -- a missing column / field
    ("seq2seq-missing-column", "seq2seq", "s.csv", "src,tgt\na,b\n",
     ["data.source_column='source' is not a column of", "s.csv", "['src', 'tgt']"]),
    ("classification-missing-label-jsonl", "classification", "t.jsonl", jsonl(*[{"sentence": "a", "y": 1}] * 20),
     ["data.label_column='label' is not a column of", "t.jsonl", "['sentence', 'y']"]),
    ("qa-missing-context", "qa", "q.jsonl", jsonl(QA_ROW, {"id": "2", "question": "q?", "answers": []}),
     ["q.jsonl: line 2: 'context' must be a string, it is missing"]),
]


def _write(path: Path, content) -> None:
    if callable(content):
        content(path)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _cache_leftovers(cache: Path, parsed: bool = False) -> list[str]:
    """What a failed read left in the cache: anything but `datasets`' lock files (and, for a file that `datasets`
    `parsed` well before a setting was found wrong, besides its parse of the file, keyed by the file's content and
    reused once the setting is fixed); half-written files (`*.tmp-*`, `*.incomplete`) in any case."""
    if not cache.exists():
        return []
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if ".tmp-" in p.name or p.name.endswith(".incomplete")
                  or (not parsed and ((p.is_file() and not p.name.endswith(".lock")) or p.name.startswith("default-")))
                  or (parsed and p.relative_to(cache).parts[0] != "hf_datasets"))


@pytest.mark.parametrize("family, name, content, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_file_is_refused_with_key_file_and_line(tmp_path, family, name, content, fragments):
    key, load = FAMILIES[family]
    path = tmp_path / name
    _write(path, content)
    if family == "parallel":
        _write(tmp_path / "pair.en", b"" if content == b"" else b"hello\nworld\n")
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError) as info:
        load(str(path), str(cache))
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 600, msg
    for fragment in fragments:
        assert fragment in msg, msg
    wrong_setting = "_column=" in msg  # the file is fine, the column setting is not
    if family not in ("qa", "sft", "preference") and not wrong_setting:  # those name the file (and line) first
        assert msg.startswith(key), msg
    assert _cache_leftovers(cache, parsed=wrong_setting) == []


def test_gzip_data_under_a_plain_name_is_read_as_its_content(tmp_path):
    """A gzip file named .csv or .json is decompressed (by `datasets` and by our readers alike), not refused."""
    table = tmp_path / "t.csv"
    table.write_bytes(gzip.compress(CLS_ROWS.encode()))
    raw = FAMILIES["classification"][1](str(table), str(tmp_path / "cache"))
    assert len(raw["train"]) + len(raw["validation"]) == 20
    qa = tmp_path / "q.jsonl"
    qa.write_bytes(gzip.compress(jsonl(*[{**QA_ROW, "id": str(i)} for i in range(10)]).encode()))
    assert len(FAMILIES["qa"][1](str(qa), str(tmp_path / "cache"))["train"]) == 9


def test_rows_with_missing_fields_are_named_or_counted(tmp_path, caplog):
    """A CSV row with fewer fields than the header: classification names the row (its label is null);
    seq2seq drops the pair as an empty one and counts it."""
    table = tmp_path / "t.csv"
    table.write_text(CLS_ROWS + "lonely\n")
    with pytest.raises(ConfigError, match=r"data.label_column='label': 1 null values in .*t\.csv \(rows 21\): an "
                                          r"empty field, or a row with fewer fields than the header"):
        FAMILIES["classification"][1](str(table), str(tmp_path / "cache"))
    pairs = tmp_path / "s.csv"
    pairs.write_text("source,target\n" + "".join(f"s{i},t{i}\n" for i in range(20)) + "lonely\n")
    dm = Seq2SeqDataModule(train_files=str(pairs), cache_dir=str(tmp_path / "cache"))
    with caplog.at_level("WARNING", logger="lit_llm"):
        dm.load_raw()
    assert dm.load_stats["train"]["dropped_empty"] == 1 and "dropped 1 pair(s) with an empty source" in caplog.text


def test_headerless_csv_with_too_many_fields_names_column_names(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text('"1","title a","desc a"\n"2","title b","desc b","extra"\n')
    with pytest.raises(ConfigError, match=r"h\.csv line 2 has 4 fields but data\.column_names names 3"):
        ClassificationDataModule(train_files=str(path), column_names=["label", "title", "desc"], text_column="title",
                                 cache_dir=str(tmp_path / "cache")).load_raw()


# ============================================================================ checkpoints

def _lit_llm_like(path: Path) -> None:
    torch.save({"lit_llm": {"backbone_config": {"n_layer": 2}, "tokenizer_json": "{}", "task": "clm"},
                "state_dict": {f"backbone.w{i}": torch.randn(500) for i in range(4)}}, path)


def _truncated(path: Path) -> None:
    _lit_llm_like(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CHECKPOINTS = [  # (id, writes the file, fragments of the message)
    ("plain-torch-dict", lambda p: torch.save({"state_dict": {"w": torch.zeros(2)}}, p),
     ["was not written by lit-llm", "pipelines/train.py"]),
    ("hf-state-dict", lambda p: torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 2)}, p),
     ["was not written by lit-llm"]),
    ("a-saved-tensor", lambda p: torch.save(torch.zeros(3), p), ["holds a Tensor, not a checkpoint"]),
    ("text-renamed-ckpt", lambda p: p.write_text("epoch=3 step=100\n"),
     ["is not a readable checkpoint: not a PyTorch checkpoint (it is a text file)"]),
    ("png-renamed-ckpt", lambda p: p.write_bytes(PNG), ["not a PyTorch checkpoint (it is a PNG image)"]),
    ("empty-file", lambda p: p.write_bytes(b""), ["it is empty (0 bytes"]),
    ("truncated", _truncated, ["is not a readable checkpoint: a truncated or damaged PyTorch file"]),
]


@pytest.mark.parametrize("write, fragments", [c[1:] for c in CHECKPOINTS], ids=[c[0] for c in CHECKPOINTS])
def test_foreign_or_broken_checkpoint_names_the_setting(tmp_path, write, fragments):
    path = tmp_path / "model.ckpt"
    write(path)
    uses = [("ckpt_path", lambda: check_compatible(str(path), {"n_layer": 2})),  # resume (train.py ckpt_path=)
            ("model.init_from", lambda: load_pretrained(str(path))),            # fine-tuning start
            ("ckpt_path", lambda: open_checkpoint(str(path)))]                  # pipelines/evaluate.py
    for key, use in uses:
        with pytest.raises(ConfigError) as info:
            use()
        msg = str(info.value)
        assert msg.startswith(f"{key}={path}"), msg
        if "lit-llm" in fragments[0] and use is uses[2][1]:  # evaluate says "not a lit-llm task checkpoint"
            assert "is not a lit-llm task checkpoint" in msg, msg
            continue
        for fragment in fragments:
            assert fragment in msg, msg


def test_a_foreign_init_from_points_at_the_hf_prefix(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 2)}, path)
    with pytest.raises(ConfigError, match=r"model\.init_from=.*pytorch_model\.bin was not written by lit-llm.*"
                                          r"model\.init_from=hf:<its directory>"):
        load_pretrained(str(path))
    _lit_llm_like(tmp_path / "ok.ckpt")
    assert read_checkpoint(tmp_path / "ok.ckpt")["lit_llm"]["task"] == "clm"


def test_line_and_column_are_exact_across_read_chunks(tmp_path):
    """Files are checked in 1 MiB pieces of whole lines: the line and column stay exact past a piece's end and in a
    line longer than a piece; JSON Lines are read line by line with their numbers."""
    from lit_llm.data.sources import nonblank_lines, text_lines

    path = tmp_path / "big.txt"
    long_line = b"x" * (3 << 20)  # 3 MiB without a newline
    path.write_bytes(b"short\n" * 300_000 + long_line + b"\n" + b"ab" + LATIN1 + b"\n")
    with pytest.raises(ConfigError, match=r"big\.txt is not UTF-8 text: line 300002, column 6 has the byte 0xe9"):
        nonblank_lines(path, "data.files")
    path.write_bytes(b"short\n" * 300_000 + long_line + b"\r\nlast")
    assert nonblank_lines(path) == 2
    *_, before, last = text_lines(path)
    assert before == (300_001, long_line.decode()) and last == (300_002, "last")
