"""The chain pretrain -> fine-tune on tiny data: classification, masked LM, model.init_from."""
from __future__ import annotations

import json

import pytest
import torch

from lit_llm.checkpointing import load_pretrained
from lit_llm.errors import ConfigError
from lit_llm.run import train

CLASSIFY = ["data=tiny_sentiment", "tokenizer=bpe", "tokenizer.vocab_size=512", "task=classification",
            "trainer.max_steps=150", "trainer.val_check_interval=50", "trainer.limit_val_batches=null",
            "trainer.limit_test_batches=null", "task.optim.lr=2e-3", "task.optim.warmup_steps=10"]


def test_encoder_classifier_learns_tiny_sentiment(compose_train, tmp_path):
    out = tmp_path / "cls"
    metrics = train(compose_train(CLASSIFY + ["model=bert_tiny", "task.pooling=cls"], out, tiny=False))
    assert metrics["test/test/acc"] > 0.8  # chance is 0.5 (balanced classes)
    assert {"test/test/f1_macro", "test/test/f1/negative", "test/test/f1/positive", "val/acc"} <= set(metrics)
    confusion = json.loads((out / "test_confusion_matrix.json").read_text())
    assert confusion["labels"] == ["negative", "positive"]
    assert sum(map(sum, confusion["rows_true_cols_predicted"])) == 54  # every test sentence counted once


def test_masked_lm_pretraining_then_classification(compose_train, tmp_path):
    mlm = tmp_path / "mlm"
    metrics = train(compose_train(["experiment=quickstart", "model=bert_tiny", "model.block_size=32",
                                   "task=mlm", "data.objective=mlm", "callbacks.generate_samples=null"], mlm))
    assert {"val/loss", "val/masked_acc", "test/validation/masked_acc", "test/validation/ppl"} <= set(metrics)
    assert not (mlm / "samples").exists()  # encoders do not generate

    out = tmp_path / "cls"
    train(compose_train(CLASSIFY + ["model=bert_tiny", "trainer.max_steps=4", f"model.init_from={mlm}"],
                        out, tiny=False))
    loaded = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert loaded["lit_llm"]["tokenizer_json"] == (mlm / "tokenizer.json").read_text()  # the MLM run's tokenizer
    assert json.loads((out / "run.json").read_text())["init_from"] == str(mlm)


def test_init_from_copies_the_pretrained_backbone(compose_train, tmp_path):
    clm = tmp_path / "clm"
    train(compose_train(["experiment=quickstart", "test=false"], clm))
    pretrained = load_pretrained(str(clm))

    from lit_llm.checkpointing import load_backbone_weights
    from lit_llm.tasks.classification import ClassificationTask

    task = ClassificationTask(model=pretrained.backbone_config, optim={}, num_labels=2, pooling="last")
    line = load_backbone_weights(task.backbone, pretrained)
    assert "missing" not in line and "unexpected" not in line
    for name, tensor in task.backbone.state_dict().items():
        torch.testing.assert_close(tensor, pretrained.state_dict[name], msg=name)

    # end to end: a GPT as classifier, initialised from the CLM run (its tokenizer comes along)
    out = tmp_path / "gpt_cls"
    metrics = train(compose_train(CLASSIFY + ["model=gpt_tiny", "model.block_size=64", "task.pooling=last",
                                              "trainer.max_steps=4", f"model.init_from={clm}"], out, tiny=False))
    assert "test/test/acc" in metrics


def test_init_from_with_a_different_tokenizer_file_is_refused(compose_train, tmp_path):
    clm = tmp_path / "clm"
    train(compose_train(["experiment=quickstart", "test=false", "trainer.max_steps=2"], clm))
    other = tmp_path / "other"
    train(compose_train(["experiment=quickstart", "test=false", "trainer.max_steps=2", "tokenizer=bpe",
                         "tokenizer.vocab_size=300"], other))
    with pytest.raises(ConfigError, match="tokenizer.path"):
        train(compose_train(CLASSIFY + ["model=gpt_tiny", f"model.init_from={clm}", "tokenizer=pretrained",
                                        f"tokenizer.path={other}/tokenizer.json"], tmp_path / "x", tiny=False))


def test_init_from_missing_hf_dir(compose_train, tmp_path):
    with pytest.raises(ConfigError, match="model.init_from"):
        train(compose_train(CLASSIFY + ["model=bert_tiny", f"model.init_from=hf:{tmp_path}/nope"], tmp_path / "x",
                            tiny=False))


@pytest.mark.parametrize("model", ["gpt_tiny", "bert_tiny"])
def test_export_to_hugging_face_format(compose_train, tmp_path, model):
    transformers = pytest.importorskip("transformers")
    import subprocess
    import sys

    from lit_llm.checkpointing import load_backbone
    from tests.conftest import ROOT

    run = tmp_path / "run"
    extra = ["task=mlm", "data.objective=mlm"] if model == "bert_tiny" else []
    train(compose_train(["experiment=quickstart", f"model={model}", "model.block_size=32", "test=false",
                         "trainer.max_steps=2", *extra], run))
    hf_dir = tmp_path / "hf"
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "export.py"), str(run), str(hf_dir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours, _ = load_backbone(str(run))
    ids = torch.randint(7, 60, (2, 16))
    with torch.no_grad():
        if model == "gpt_tiny":
            theirs = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
            torch.testing.assert_close(theirs(ids).logits[..., : ours.config.vocab_size], ours(ids), atol=1e-4, rtol=0)
        else:
            theirs = transformers.BertForMaskedLM.from_pretrained(hf_dir).eval()
            torch.testing.assert_close(theirs(ids).logits, ours.mlm_logits(ours(ids)), atol=1e-4, rtol=0)


def test_init_from_a_checkpoint_with_fewer_embeddings_than_its_tokenizer_is_refused(compose_train, tmp_path):
    """A vocab.txt with 40 tokens next to a BERT with 30 embedding rows: an error naming the source,
    before any data is tokenized, not an index error in the first batch."""
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(ord("a"), ord("a") + 26)]
    vocab += [f"##{chr(c)}" for c in range(ord("a"), ord("a") + 9)]  # 40 tokens
    hf_dir = tmp_path / "bert"
    torch.manual_seed(0)
    transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64)).save_pretrained(hf_dir)
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"model.init_from=hf:{hf_dir} has 30 embeddings but its tokenizer 40 "
                                          r"tokens; the checkpoint and its tokenizer do not belong together"):
        train(compose_train(CLASSIFY + ["model=bert_tiny", f"model.init_from=hf:{hf_dir}"], tmp_path / "x",
                            tiny=False))
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_init_from_a_bert_whose_tokenizer_file_pads_and_truncates(compose_train, tmp_path):
    """The reported break: a sentence-transformers-style tokenizer.json pads every text to 128 and truncates;
    with model.init_from=hf:<dir> nothing is truncated to data.max_length=32 and no pad id is content. The
    tokenizer's chat template (tokenizer_config.json) is kept in the run's checkpoints."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    from lit_llm import package_file

    lines = open(package_file("corpora/tiny_sentiment.tsv"), encoding="utf-8").read().splitlines()[1:]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator([line.split("\t")[0] for line in lines], trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                 ("[SEP]", 3)])
    tok.enable_padding(length=128, pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(128)
    hf_dir = tmp_path / "bert"
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    transformers.BertTokenizerFast(tokenizer_object=tok, chat_template=template).save_pretrained(hf_dir)
    transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64)).save_pretrained(hf_dir)
    assert json.loads((hf_dir / "tokenizer.json").read_text())["padding"] is not None

    out = tmp_path / "cls"
    train(compose_train(CLASSIFY + ["model=bert_tiny", f"model.init_from=hf:{hf_dir}", "trainer.max_steps=4",
                                    "data.max_length=32"], out, tiny=False))
    stats = json.loads((out / "run.json").read_text())["data"]
    assert all(stats[split]["truncated"] == 0 and stats[split]["max_tokens"] < 32 for split in ("train", "test"))
    assert json.loads((out / "tokenizer.json").read_text())["padding"] is None
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["lit_llm"]["run_config"]["chat_template"] == template
    assert load_pretrained(str(out)).chat_template == template  # and a run started from this one keeps it


def test_continue_training_a_hugging_face_llama_with_its_own_end_of_text_token(compose_train, tmp_path):
    """model.init_from=hf:<Llama dir> on a corpus: documents end with the tokenizer's own </s> (named in its
    config files, not our <eos>), in the packed data and in the generated samples."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from lit_llm import package_file

    text = open(package_file("corpora/quickstart.txt"), encoding="utf-8").read().splitlines()[:2000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>", "<unk>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_dir = tmp_path / "llama"
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                         unk_token="<unk>").save_pretrained(hf_dir)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64)).save_pretrained(hf_dir)
    out = tmp_path / "run"
    metrics = train(compose_train(["experiment=quickstart", f"model.init_from=hf:{hf_dir}", "data.block_size=32"], out))
    assert metrics["test/validation/ppl"] > 1
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["norm"] == "rmsnorm" and run["model"]["n_kv_head"] == 2
    assert list((out / "samples").glob("step_*.txt"))  # sampled after </s>, the tokenizer's own end of text


def test_classification_with_a_hugging_face_decoder_that_has_no_bos(compose_train, tmp_path):
    """A tokenizer with only an end token (Qwen2-Instruct's <|im_end|>, no <bos>): it starts and ends each text (as
    [CLS] / [SEP] would) and pads; pooling=last reads the last real token of the decoder."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from lit_llm import package_file

    lines = open(package_file("corpora/tiny_sentiment.tsv"), encoding="utf-8").read().splitlines()[1:]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator([line.split("\t")[0] for line in lines], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_dir = tmp_path / "qwen2"
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                         pad_token="<|im_end|>").save_pretrained(hf_dir)
    transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)).save_pretrained(hf_dir)
    out = tmp_path / "cls"
    metrics = train(compose_train(CLASSIFY + ["model=gpt_tiny", f"model.init_from=hf:{hf_dir}", "task.pooling=last",
                                              "trainer.max_steps=4", "data.max_length=60"], out, tiny=False))
    assert 0 <= metrics["test/test/acc"] <= 1
    run = json.loads((out / "run.json").read_text())
    stored = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["lit_llm"]
    assert run["model"]["qkv_bias"] is True and stored["run_config"]["special_ids"] == {"<eos>": 0, "<pad>": 0}


def test_fine_tune_a_hugging_face_t5_and_export_it(compose_train, tmp_path):
    """model.init_from=hf:<T5 dir> on a translation corpus: a few steps, generation scored, the run exports back to
    a T5ForConditionalGeneration that transformers loads."""
    transformers = pytest.importorskip("transformers")
    from tests.integration.test_seq2seq_run import corpus
    from tests.unit.test_hf_seq2seq import t5_dir

    hf_dir = t5_dir(tmp_path / "t5")
    out = tmp_path / "mt"
    metrics = train(compose_train(["data=multi30k_de_en", *corpus(tmp_path), "task=seq2seq", "model=t5_small",
                                   f"model.init_from=hf:{hf_dir}", "trainer.max_steps=3", "data.batch_size=8",
                                   "task.generation.max_new_tokens=8", "trainer.limit_val_batches=1",
                                   "trainer.limit_test_batches=1"], out, tiny=False))
    assert 0 <= metrics["test/test/bleu"] <= 100
    run = json.loads((out / "run.json").read_text())
    stored = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["lit_llm"]
    assert run["model"]["pos_embedding"] == "relative" and stored["run_config"]["special_ids"]["<bos>"] == 0  # <pad>
    import subprocess
    import sys
    from pathlib import Path

    exported = tmp_path / "export"
    script = Path(__file__).resolve().parents[2] / "pipelines" / "export.py"
    done = subprocess.run([sys.executable, str(script), str(out), str(exported)], capture_output=True, text=True)
    assert done.returncode == 0 and "(T5 format)" in done.stdout, done.stderr
    back = transformers.AutoModelForSeq2SeqLM.from_pretrained(exported)
    assert back.config.model_type == "t5" and back.config.decoder_start_token_id == 0


def test_translation_on_a_pretrained_bert_encoder(compose_train, tmp_path):
    """model.init_encoder_from=hf:<BERT dir>: the seed's BERT-encoder + Transformer-decoder, trained end to end; the
    checkpoint holds the BERT encoder's weights where the encoder is, and the decoder is new."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    from tests.integration.test_seq2seq_run import corpus

    overrides = corpus(tmp_path)
    words = (tmp_path / "train.de").read_text().split() + (tmp_path / "train.en").read_text().split()
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(words, trainers.WordPieceTrainer(vocab_size=120, special_tokens=[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                 ("[SEP]", 3)])
    hf_dir = tmp_path / "bert"
    transformers.BertTokenizerFast(tokenizer_object=tok).save_pretrained(hf_dir)
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64))
    bert.save_pretrained(hf_dir)
    out = tmp_path / "mt"
    metrics = train(compose_train(["data=multi30k_de_en", *overrides, "task=seq2seq", "model=transformer_tiny",
                                   f"model.init_encoder_from=hf:{hf_dir}", "model.n_decoder_layer=1",
                                   "trainer.max_steps=2", "data.batch_size=8", "task.generation.max_new_tokens=6",
                                   "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"], out, tiny=False))
    assert 0 <= metrics["test/test/bleu"] <= 100
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["n_embd"] == 32 and run["model"]["n_decoder_layer"] == 1 and not run["model"]["norm_first"]
    stored = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert stored["lit_llm"]["run_config"]["special_ids"]["<bos>"] == 2  # [CLS] starts the decoder
    with pytest.raises(ConfigError, match="give one"):
        train(compose_train(["data=multi30k_de_en", *overrides, "task=seq2seq", "model=transformer_tiny",
                             f"model.init_encoder_from=hf:{hf_dir}", f"model.init_from=hf:{hf_dir}"], tmp_path / "x"))
