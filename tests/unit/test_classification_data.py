"""ClassificationDataModule: loading, labels, splits, templates, truncation, caching, loaders, bad input."""
from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

import lit_llm
from lit_llm.data import classification as cls_mod
from lit_llm.data.classification import (
    BucketRandomSampler,
    ClassificationDataModule,
    _encode_examples,
    read_label_names,
)
from lit_llm.errors import ConfigError
from lit_llm.tokenization import train_bpe, train_char
from tests.conftest import requires_data

CLS, SEP, PAD = 5, 6, 0


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def tsv(path: Path, rows, header="sentence\tlabel") -> str:
    return write(path, header + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))


def sentiment_rows(n: int = 40):
    words = {0: ["bad", "dull", "awful"], 1: ["good", "great", "fine"]}
    return [(f"a {words[i % 2][i % 3]} movie {'really ' * (i % 4)}.", i % 2) for i in range(n)]


def make_dm(tmp_path, train, **kw) -> ClassificationDataModule:
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    return ClassificationDataModule(train_files=train, **kw)


def ready(dm: ClassificationDataModule, kind: str = "char", **special) -> ClassificationDataModule:
    dm.load_raw()
    texts = [t for batch in dm.train_texts() for t in batch]
    dm.set_tokenizer(train_char(texts) if kind == "char" else train_bpe(texts, 300), **special)
    dm.setup()
    return dm


# ============================================================================ templates and truncation

class _Enc:
    def __init__(self, ids):
        self.ids = ids


class _FakeTokenizer:
    """Each text is a space-separated list of integer ids; no post-processor (lit-llm's own tokenizers)."""

    post_processor = None

    def encode_batch(self, texts, add_special_tokens=False):
        return [_Enc([int(t) for t in text.split()]) for text in texts]


def _encode(texts, pairs=None, max_length=8):
    batch = {"text": texts, "label": [0] * len(texts)}
    if pairs is not None:
        batch["text_pair"] = pairs
    return _encode_examples(batch, _FakeTokenizer(), CLS, SEP, max_length)


def test_single_template_and_truncation():
    out = _encode(["10 11 12", "10 11 12 13 14 15 16 17"], max_length=6)
    assert out["input_ids"] == [[CLS, 10, 11, 12, SEP], [CLS, 10, 11, 12, 13, SEP]]
    assert out["needed"] == [5, 10] and out["length"] == [5, 6]
    assert "token_type_ids" not in out


def test_pair_template_token_types_and_longest_first_truncation():
    out = _encode(["10 11", "10 11 12 13 14 15", "10 11 12 13 14 15", "10"],
                  ["20 21 22", "20", "20 21 22 23 24 25 26", "20 21 22 23 24 25 26 27"], max_length=9)
    assert out["input_ids"][0] == [CLS, 10, 11, SEP, 20, 21, 22, SEP]
    assert out["token_type_ids"][0] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert out["input_ids"][1] == [CLS, 10, 11, 12, 13, 14, SEP, 20, SEP]  # the longer (first) text loses tokens
    assert out["input_ids"][2] == [CLS, 10, 11, 12, SEP, 20, 21, 22, SEP]  # both long: budget 6 split 3/3
    assert out["input_ids"][3] == [CLS, 10, SEP, 20, 21, 22, 23, 24, SEP]  # the short one is kept whole
    assert out["needed"] == [8, 10, 16, 12]  # before truncation: both texts and 3 special tokens
    assert all(len(ids) <= 9 and len(ids) == len(types) for ids, types in zip(out["input_ids"], out["token_type_ids"]))


def test_module_builds_pair_inputs_with_special_ids(tmp_path):
    path = write(tmp_path / "p.jsonl", "".join(
        f'{{"q": "question {i}", "a": "answer {i} long", "y": "{"yes" if i % 2 else "no"}"}}\n' for i in range(20)))
    dm = ready(make_dm(tmp_path, path, text_column="q", text_pair_column="a", label_column="y",
                       label_names=["no", "yes"], max_length=40, batch_size=4, val_fraction=0.2),
               special_ids={"cls": 2, "sep": 3, "pad": 1})  # e.g. a WordPiece tokenizer's ids
    ex = dm.examples["train"][0]
    ids, types = list(ex["input_ids"]), list(ex["token_type_ids"])
    assert ids[0] == 2 and ids[-1] == 3 and ids.count(3) == 2
    assert types == [0] * (ids.index(3) + 1) + [1] * (len(ids) - ids.index(3) - 1)
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "example_index"}
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 1).all()  # padded with the given pad id
    assert sum(len(b) for b in dm.train_texts()) == 2 * len(dm.raw["train"])  # texts and pairs for the tokenizer


def test_max_length_truncates_and_is_reported(tmp_path, caplog):
    rows = [("x" * 30, 0), ("y" * 5, 1)] * 10
    with caplog.at_level("WARNING", logger="lit_llm"):
        dm = ready(make_dm(tmp_path, tsv(tmp_path / "t.tsv", rows), max_length=12, val_fraction=0.1,
                           label_names=["n", "p"]))
    assert max(len(dm.examples["train"][i]["input_ids"]) for i in range(len(dm.examples["train"]))) == 12
    long_rows = sum(t.startswith("x") for t in dm.raw["train"]["text"])
    assert dm.stats["train"]["truncated"] == long_rows > 0 and dm.stats["train"]["max_tokens"] == 12
    # about half the examples cut: a warning naming the setting and the lengths the data needs
    warned = [r.getMessage() for r in caplog.records if "truncated to data.max_length=12" in r.getMessage()]
    assert warned and "median" in warned[0] and "p95" in warned[0] and "raise data.max_length" in warned[0]


def test_every_example_truncated_is_an_error(tmp_path):
    rows = [("x" * 30, 0), ("z" * 40, 1)] * 10
    with pytest.raises(ConfigError, match=r"data.max_length=12: every one of the \d+ examples of the \w+ split is "
                                          r"longer \(lengths in tokens: median \d+"):
        ready(make_dm(tmp_path, tsv(tmp_path / "t.tsv", rows), max_length=12, val_fraction=0.1,
                      label_names=["n", "p"]))


# ============================================================================ labels

def test_label_names_list_maps_string_and_integer_labels(tmp_path):
    rows = [("good", "positive"), ("bad", "negative"), ("fine", 1), ("poor", 0)] * 5
    dm = make_dm(tmp_path, tsv(tmp_path / "t.tsv", rows), label_names=["negative", "positive"], val_fraction=0.2)
    raw = dm.load_raw()
    full = [(t, y) for s in ("train", "validation") for t, y in zip(raw[s]["text"], raw[s]["label"])]
    assert dict(full) == {"good": 1, "bad": 0, "fine": 1, "poor": 0}
    assert dm.num_labels == 2 and dm.label_names == ["negative", "positive"]


def test_label_names_from_file_and_mapping(tmp_path):
    names = write(tmp_path / "classes.txt", "World\nSports\n\nBusiness\n")
    assert read_label_names(names)[0] == ["World", "Sports", "Business"]
    rows = [(f"t{i}", i % 3 + 1) for i in range(30)]  # 1-based class indices, as AG News
    dm = make_dm(tmp_path, tsv(tmp_path / "t.tsv", rows),
                 label_names={1: "World", 2: "Sports", 3: "Business"}, val_fraction=0.1)
    raw = dm.load_raw()
    assert dm.label_names == ["World", "Sports", "Business"]
    assert all(int(t[1:]) % 3 == y for t, y in zip(raw["train"]["text"], raw["train"]["label"]))


def test_label_names_default_to_sorted_train_labels(tmp_path):
    rows = [(f"t{i}", ["sci", "arts", "law"][i % 3]) for i in range(30)]
    dm = make_dm(tmp_path, tsv(tmp_path / "t.tsv", rows), val_fraction=0.1)
    raw = dm.load_raw()
    assert dm.label_names == ["arts", "law", "sci"]
    assert all(["sci", "arts", "law"][int(t[1:]) % 3] == dm.label_names[y]
               for t, y in zip(raw["train"]["text"], raw["train"]["label"]))
    ints = make_dm(tmp_path, tsv(tmp_path / "i.tsv", [(f"t{i}", 10 + i % 2) for i in range(20)]), val_fraction=0.1)
    ints.load_raw()
    assert ints.label_names == ["10", "11"]


# ============================================================================ splits

def test_split_is_seeded_complete_and_disjoint(tmp_path):
    path = tsv(tmp_path / "t.tsv", [(f"s{i}", i % 2) for i in range(100)])

    def splits(seed):
        raw = make_dm(tmp_path, path, label_names=["a", "b"], val_fraction=0.1, test_fraction=0.2,
                      split_seed=seed).load_raw()
        return {k: list(v["text"]) for k, v in raw.items()}

    a, b, c = splits(7), splits(7), splits(8)
    assert a == b and a != c
    assert [len(a[k]) for k in ("train", "validation", "test")] == [70, 10, 20]
    assert sorted(sum(a.values(), [])) == sorted(f"s{i}" for i in range(100))
    assert a["train"] == sorted(a["train"], key=lambda s: int(s[1:]))  # row order kept


def test_train_limit_keeps_a_seeded_nested_subset_and_whole_eval_splits(tmp_path):
    path = tsv(tmp_path / "t.tsv", [(f"s{i}", i % 2) for i in range(100)])

    def load(limit, seed=7, limit_seed=None):
        dm = make_dm(tmp_path, path, label_names=["a", "b"], val_fraction=0.1, split_seed=seed, train_limit=limit,
                     train_limit_seed=limit_seed)
        raw = dm.load_raw()
        return {k: list(v["text"]) for k, v in raw.items()}, dm.data_fingerprint

    full, fp_full = load(None)
    small, fp_small = load(20)
    mid, fp_mid = load(50)
    assert len(small["train"]) == 20 and len(mid["train"]) == 50 and len(full["train"]) == 90
    assert small["validation"] == mid["validation"] == full["validation"]  # validation drawn before the limit
    assert set(small["train"]) <= set(mid["train"]) <= set(full["train"])  # nested with one seed
    assert small["train"] == sorted(small["train"], key=lambda s: int(s[1:]))  # row order kept
    assert load(20) == (small, fp_small)  # seeded
    assert load(20, limit_seed=8)[0]["train"] != small["train"]
    assert len({fp_full, fp_small, fp_mid}) == 3  # the cache and the records tell the subsets apart
    assert load(500)[0] == full  # a limit above the row count keeps every row
    with pytest.raises(ConfigError, match="data.train_limit"):
        load(0)


def test_given_files_are_used_and_test_falls_back_to_validation(tmp_path):
    train = tsv(tmp_path / "train.tsv", sentiment_rows(20))
    val = tsv(tmp_path / "val.tsv", sentiment_rows(6))
    dm = make_dm(tmp_path, train, validation_files=val, label_names=["neg", "pos"])
    raw = dm.load_raw()
    assert {k: len(v) for k, v in raw.items()} == {"train": 20, "validation": 6}
    assert dm.test_names == ["validation"]
    dm2 = make_dm(tmp_path, train, test_files=val, label_names=["neg", "pos"], val_fraction=0.25)
    assert {k: len(v) for k, v in dm2.load_raw().items()} == {"train": 15, "validation": 5, "test": 6}
    assert dm2.test_names == ["test"]
    assert dm.data_fingerprint != dm2.data_fingerprint


def test_fingerprint_follows_content_not_names(tmp_path):
    rows = sentiment_rows(20)
    a = make_dm(tmp_path, tsv(tmp_path / "a.tsv", rows), label_names=["n", "p"])
    b = make_dm(tmp_path, tsv(tmp_path / "b.tsv", rows), label_names=["n", "p"])
    c = make_dm(tmp_path, tsv(tmp_path / "c.tsv", rows[:-1]), label_names=["n", "p"])
    d = make_dm(tmp_path, tsv(tmp_path / "a.tsv", rows), label_names=["n", "p"], val_fraction=0.2)
    fps = [dm.load_raw() and dm.data_fingerprint for dm in (a, b, c, d)]
    assert fps[0] == fps[1] and len(set(fps)) == 3


# ============================================================================ caching and loaders

def test_cache_hit_does_not_retokenize(tmp_path, monkeypatch):
    path = tsv(tmp_path / "t.tsv", sentiment_rows(30))
    first = ready(make_dm(tmp_path, path, label_names=["n", "p"], test_fraction=0.2))
    assert sorted(p.name for p in first.tokenized_dir.iterdir()) == ["test", "train", "validation"]

    def boom(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(cls_mod, "_encode_examples", boom)
    second = ready(make_dm(tmp_path, path, label_names=["n", "p"], test_fraction=0.2))
    assert second.tokenized_dir == first.tokenized_dir and second.stats == first.stats
    assert np.array_equal(second.examples["train"].ids, first.examples["train"].ids)
    with pytest.raises(AssertionError, match="tokenized again"):  # a new max_length is a new cache entry
        ready(make_dm(tmp_path, path, label_names=["n", "p"], test_fraction=0.2, max_length=20))


def test_loaders_shapes_order_and_resume(tmp_path):
    dm = ready(make_dm(tmp_path, tsv(tmp_path / "t.tsv", sentiment_rows(60)), label_names=["n", "p"],
                       batch_size=8, val_fraction=0.2, test_fraction=0.1))
    val = [b for b in dm.val_dataloader()]
    assert sum(len(b["labels"]) for b in val) == 12
    index = torch.cat([b["example_index"] for b in val])  # evaluation goes by length; example_index maps back
    assert sorted(index.tolist()) == list(range(12))
    assert torch.equal(torch.cat([b["labels"] for b in val])[index.argsort()], torch.tensor(list(dm.raw["validation"]["label"])))
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[1] == batch["attention_mask"].sum(1).max()
    assert len(dm.test_dataloader()) == 1 and dm.test_names == ["test"]
    full = [b["labels"].tolist() + b["input_ids"][:, 1].tolist() for b in dm.train_dataloader()]
    assert len(full) == 42 // 8
    dm.trainer = SimpleNamespace(global_step=2, accumulate_grad_batches=1, limit_train_batches=1.0,
                                 world_size=1, global_rank=0)
    resumed = [b["labels"].tolist() + b["input_ids"][:, 1].tolist() for b in dm.train_dataloader()]
    assert resumed == full[2:]


def test_bucket_sampler_groups_similar_lengths_and_resumes():
    lengths = np.random.default_rng(0).integers(3, 60, size=1000)
    s = BucketRandomSampler(lengths, batch_size=10, seed=1, bucket_batches=5)
    order = list(s)
    assert sorted(order) == list(range(1000)) and len(s) == 1000
    batches = [order[i : i + 10] for i in range(0, 1000, 10)]
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[b]) for b in np.split(np.random.default_rng(1).permutation(1000), 100)])
    assert spread < random_spread / 4
    assert np.ptp([np.mean(lengths[b]) for b in batches[:20]]) > 20  # batches of all lengths, shuffled
    s.start_index = 30
    assert list(s) == order[30:]
    s.set_epoch(1)
    assert list(s) != order
    assert list(BucketRandomSampler(lengths, batch_size=10, seed=1, bucket_batches=5)) == order


def test_bucketed_train_loader_pads_less(tmp_path):
    rows = [("w " * (1 + i % 17), i % 2) for i in range(200)]
    dm = ready(make_dm(tmp_path, tsv(tmp_path / "t.tsv", rows), label_names=["n", "p"], batch_size=8,
                       bucket_by_length=True, val_fraction=0.1))
    assert isinstance(dm.make_train_sampler(), BucketRandomSampler)
    padding = [(b["attention_mask"] == 0).float().mean().item() for b in dm.train_dataloader()]
    dm.bucket_by_length = False
    plain = [(b["attention_mask"] == 0).float().mean().item() for b in dm.train_dataloader()]
    assert np.mean(padding) < np.mean(plain) / 2


def generate_tiny_sentiment(seed: int = 0) -> str:
    """The text of lit_llm/corpora/tiny_sentiment.tsv: 360 template sentences, 180 per label."""
    rng = random.Random(seed)
    pos = ["great", "wonderful", "brilliant", "charming", "delightful", "moving", "superb", "excellent",
           "beautiful", "funny", "touching", "gripping", "fresh", "clever", "lovely", "stunning", "warm", "smart"]
    neg = ["awful", "boring", "dull", "terrible", "bland", "tedious", "painful", "clumsy", "weak", "messy",
           "lifeless", "stupid", "ugly", "forgettable", "hollow", "sloppy", "tiresome", "dreadful"]
    subjects = ["the movie", "this film", "the story", "the acting", "the script", "the ending", "the cast",
                "the plot", "the soundtrack", "the direction", "the dialogue", "the characters"]
    frames = ["{s} was {a} .", "{s} is {a} .", "{s} felt {a} from start to finish .", "i found {s} {a} .",
              "what a {a} experience , {s} was {a} .", "honestly , {s} is {a} .", "{s} looked {a} and {a2} .",
              "overall {s} was {a} ."]
    rows: set = set()
    while len(rows) < 360:
        label = len(rows) % 2
        a, a2 = rng.sample(pos if label else neg, 2)
        text = rng.choice(frames).format(s=rng.choice(subjects), a=a, a2=a2)
        if (text, 1 - label) not in rows:
            rows.add((text, label))
    ordered = sorted(rows)
    rng.shuffle(ordered)
    return "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in ordered)


def test_tiny_sentiment_ships_regenerates_and_is_learnable(compose_train):
    shipped = Path(lit_llm.package_file("corpora/tiny_sentiment.tsv"))
    assert shipped.read_text() == generate_tiny_sentiment()
    cfg = compose_train(["data=tiny_sentiment", "paths.data_dir=/nonexistent"], tiny=False)
    dm = instantiate(cfg.data, cache_dir=cfg.paths.cache_dir, _convert_="all")
    dm.load_raw()
    assert {k: len(v) for k, v in dm.raw.items()} == {"train": 252, "validation": 54, "test": 54}
    dm.set_tokenizer(train_bpe((t for b in dm.train_texts() for t in b), 8192))
    dm.setup()
    assert dm.stats["train"]["truncated"] == 0
    # a bag of tokens + logistic regression learns it in a second: the data carries the signal
    torch.manual_seed(0)
    vocab = dm.tokenizer.get_vocab_size()
    model = torch.nn.Sequential(torch.nn.EmbeddingBag(vocab, 16, mode="mean", padding_idx=0), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(15):
        for b in dm.train_dataloader():
            loss = torch.nn.functional.cross_entropy(model(b["input_ids"]), b["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        correct = sum((model(b["input_ids"]).argmax(1) == b["labels"]).sum().item() for b in dm.test_dataloader()[0])
    assert correct / 54 > 0.85


# ============================================================================ bad input

def test_label_outside_the_classes_names_file_and_row(tmp_path):
    rows = sentiment_rows(10)
    rows[6] = ("meh", "neutral")
    path = tsv(tmp_path / "bad.tsv", rows)
    with pytest.raises(ConfigError) as e:
        make_dm(tmp_path, path, label_names=["negative", "positive"]).load_raw()
    msg = str(e.value)
    assert "data.label_names" in msg and "'neutral'" in msg and "bad.tsv" in msg and "row 7" in msg
    assert "negative" in msg
    with pytest.raises(ConfigError, match=r"label 2 in .*row 1 is not one of \['negative', 'positive', '0..1'\]"):
        make_dm(tmp_path, tsv(tmp_path / "b2.tsv", [("x", 2), ("y", 0)]), label_names=["negative", "positive"]).load_raw()


def test_validation_label_unseen_in_train_without_label_names(tmp_path):
    train = tsv(tmp_path / "train.tsv", sentiment_rows(10))
    val = tsv(tmp_path / "val.tsv", [("what", 7)])
    with pytest.raises(ConfigError, match=r"data.label_names is not set.*label 7 in data.validation_files .*val.tsv"):
        make_dm(tmp_path, train, validation_files=val).load_raw()


def test_missing_label_column(tmp_path):
    path = tsv(tmp_path / "t.tsv", sentiment_rows(10), header="sentence\tsentiment")
    with pytest.raises(ConfigError, match=r"data.label_column='label' is not a column of .*t.tsv.*'sentiment'"):
        make_dm(tmp_path, path, label_names=["n", "p"]).load_raw()


def test_missing_text_column_hints_at_headerless_files(tmp_path):
    path = write(tmp_path / "h.csv", '"1","title a","desc a"\n"2","title b","desc b"\n')
    with pytest.raises(ConfigError, match=r"data.text_column='sentence'.*data.column_names"):
        make_dm(tmp_path, path).load_raw()
    dm = make_dm(tmp_path, path, column_names=["label", "title", "desc"], text_column="title",
                 text_pair_column="desc", label_names={1: "a", 2: "b"}, val_fraction=0.5)
    assert sorted(list(dm.load_raw()["train"]["text"]) + list(dm.raw["validation"]["text"])) == ["title a", "title b"]


def test_null_text_values(tmp_path):
    path = write(tmp_path / "n.csv", "sentence,label\ngood,1\n,0\nbad,0\n,1\n")
    with pytest.raises(ConfigError, match=r"data.text_column='sentence': 2 null values in .*n.csv \(rows 2, 4\)"):
        make_dm(tmp_path, path, label_names=["n", "p"]).load_raw()


def test_empty_split_and_missing_files(tmp_path):
    train = tsv(tmp_path / "train.tsv", sentiment_rows(10))
    empty = tsv(tmp_path / "empty.tsv", [])
    with pytest.raises(ConfigError, match=r"empty.tsv has no rows.*data.test_files"):
        make_dm(tmp_path, train, test_files=empty, label_names=["n", "p"]).load_raw()
    with pytest.raises(ConfigError, match=r"data.train_files: no file matches .*nope.tsv"):
        make_dm(tmp_path, str(tmp_path / "nope.tsv")).load_raw()
    with pytest.raises(ConfigError, match=r"data.validation_files: no file matches"):
        make_dm(tmp_path, train, validation_files=str(tmp_path / "v*.tsv")).load_raw()
    with pytest.raises(ConfigError, match=r"data.val_fraction=0.01 of 10 train rows is an empty validation split"):
        make_dm(tmp_path, train, val_fraction=0.01).load_raw()
    with pytest.raises(ConfigError, match=r"data.label_names='.*classes.txt': no such file"):
        make_dm(tmp_path, train, label_names=str(tmp_path / "classes.txt")).load_raw()


def test_bad_settings(tmp_path):
    train = tsv(tmp_path / "train.tsv", sentiment_rows(10))
    with pytest.raises(ConfigError, match="data.train_files and data.hub_name"):
        ClassificationDataModule()
    with pytest.raises(ConfigError, match="data.max_length"):
        make_dm(tmp_path, train, max_length=3)
    with pytest.raises(ConfigError, match="data.val_fraction"):
        make_dm(tmp_path, train, val_fraction=1.5)
    with pytest.raises(ConfigError, match="leaves no training rows"):
        make_dm(tmp_path, train, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="repeats"):
        make_dm(tmp_path, train, label_names=["a", "a"]).load_raw()
    with pytest.raises(ConfigError, match="data.batch_size=32 is larger than the train split"):
        ready(make_dm(tmp_path, train, label_names=["n", "p"])).train_dataloader()


def test_tokenizer_without_classification_tokens(tmp_path):
    from tokenizers import Tokenizer, models

    dm = make_dm(tmp_path, tsv(tmp_path / "t.tsv", sentiment_rows(10)), label_names=["n", "p"])
    dm.load_raw()
    bare = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(ConfigError, match=r"no <cls>, <sep>, <pad> token.*special_ids"):
        dm.set_tokenizer(bare)
    dm.set_tokenizer(bare, special_ids={"<bos>": 7, "<eos>": 8})  # GPT-2 style: one end-of-text token
    assert [dm.special_ids[k] for k in ("cls", "sep", "pad")] == [7, 8, 8]


# ============================================================================ shipped configs on the real data

@requires_data("sst2/train.tsv", "sst2/dev.tsv")
def test_sst2_config_loads_the_real_data(compose_train):
    cfg = compose_train(["data=sst2"], tiny=False)
    dm = instantiate(cfg.data, cache_dir=cfg.paths.cache_dir, _convert_="all")
    raw = dm.load_raw()
    assert {k: len(v) for k, v in raw.items()} == {"train": 66002, "validation": 1347, "test": 872}
    assert dm.label_names == ["negative", "positive"] and dm.test_names == ["test"]
    assert sorted(set(raw["test"]["label"])) == [0, 1] and sum(list(raw["test"]["label"])) == 444  # dev: 444 positive
    assert raw["test"][0]["text"].startswith("it 's a charming and often affecting journey")


@requires_data("ag_news/test.csv")
def test_ag_news_config_splits_the_labelled_file(compose_train):
    cfg = compose_train(["data=ag_news"], tiny=False)
    dm = instantiate(cfg.data, cache_dir=cfg.paths.cache_dir, _convert_="all")
    raw = dm.load_raw()
    assert {k: len(v) for k, v in raw.items()} == {"train": 6080, "validation": 760, "test": 760}
    assert dm.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    # the first row of test.csv is class "3" (Business) -> id 2
    first = [(t, y) for s in raw.values() for t, y in zip(s["text"], s["label"])
             if t == "Fears for T N pension after talks"]
    assert first == [("Fears for T N pension after talks", 2)]
    counts = np.bincount(np.concatenate([list(s["label"]) for s in raw.values()]))
    assert counts.tolist() == [1900] * 4


def test_hub_dataset_splits_and_unlabelled_test_split(tmp_path, monkeypatch):
    import datasets

    def split(n, label=None):
        return datasets.Dataset.from_dict({"sentence": [f"s{i}" for i in range(n)],
                                           "label": [label if label is not None else i % 2 for i in range(n)]})

    calls = []

    def fake_hub(name, config, hf_cache):
        calls.append((name, config))
        return datasets.DatasetDict({"train": split(20), "validation": split(6), "test": split(5, label=-1)})

    monkeypatch.setattr(cls_mod, "load_hub_dataset", fake_hub)
    dm = ClassificationDataModule(hub_name="glue", hub_config="sst2", label_names=["negative", "positive"],
                                  cache_dir=str(tmp_path / "cache"))
    raw = dm.load_raw()
    assert calls == [("glue", "sst2")]
    assert {k: len(v) for k, v in raw.items()} == {"train": 20, "validation": 6}  # GLUE's -1 test labels: dropped
    assert dm.test_names == ["validation"]
    with pytest.raises(ConfigError, match="data.train_files and data.hub_name"):
        ClassificationDataModule(train_files="x.tsv", hub_name="glue")
