"""ELECTRA: a BERT body whose embeddings are `embedding_size` wide, projected to `hidden_size` (`embeddings_project`).
Tiny random ElectraForPreTraining (the discriminator: its replaced-token head is dropped) and ElectraForMaskedLM
(the generator: its head is our MLM head) saved by `transformers` load into our Encoder with equal hidden states
and MLM logits on a padded batch; the export loads back in `transformers` with equal outputs; `hf:<dir>` works as
`model.init_from`; the electra_small preset has google/electra-small-discriminator's parameter count."""
from __future__ import annotations

import logging

import pytest
import torch

from lit_llm.checkpointing import load_pretrained
from lit_llm.errors import ConfigError
from lit_llm.models import build_backbone
from lit_llm.models.encoder import Encoder, EncoderConfig
from lit_llm.models.hf_io import export_hf, hf_special_ids, load_hf
from tests.conftest import requires_data, shared_data_dir

transformers = pytest.importorskip("transformers")
pytestmark = requires_data("sst2/train.tsv")

SIZES = dict(hidden_size=32, embedding_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=40)


def write_vocab(out) -> int:
    """vocab.txt of BERT's special tokens and the commonest lower-cased SST-2 words (real text, as in the hub's
    ELECTRA checkpoints, which ship vocab.txt)."""
    words: dict[str, int] = {}
    lines = (shared_data_dir() / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:3000]
    for line in lines:
        for w in line.split("\t")[0].lower().split():
            words[w] = words.get(w, 0) + 1
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words, key=lambda w: -words[w])[:195]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return len(vocab)


def randomise_norms(model) -> None:
    """Random LayerNorms and biases: a mapping mistake cannot hide behind ones and zeros."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.3 + (1 if name.endswith("weight") else 0))


def padded_batch(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, vocab_size, (3, 24), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = 2  # [CLS]
    mask = torch.ones_like(ids)
    ids[1, 17:], mask[1, 17:] = 0, 0  # right padding
    ids[2, 9:], mask[2, 9:] = 0, 0
    return ids, mask


@pytest.fixture(scope="module", params=["discriminator", "generator"])
def electra(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    vocab_size = write_vocab(out)
    torch.manual_seed(0)
    config = transformers.ElectraConfig(vocab_size=vocab_size, **SIZES)
    cls = transformers.ElectraForPreTraining if request.param == "discriminator" else transformers.ElectraForMaskedLM
    model = cls(config).eval()
    randomise_norms(model)
    model.save_pretrained(out)
    return request.param, out, model


def test_electra_loads_with_equal_hidden_states_and_mlm_logits(electra, caplog):
    kind, out, hf = electra
    with caplog.at_level(logging.INFO, logger="lit_llm"):
        ours, tokenizer = load_hf(out)
    assert ours.config.embedding_size == 16 and ours.config.n_embd == 32 and ours.emb_proj is not None
    assert ours.wte.weight.shape == (hf.config.vocab_size, 16) and ours.mlm.decoder.weight is ours.wte.weight
    assert tokenizer is not None and hf_special_ids(out)["<cls>"] == 2
    ids, mask = padded_batch(hf.config.vocab_size)
    real = mask.bool()
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, output_hidden_states=True)
        hidden = ours(ids, attention_mask=mask)
        torch.testing.assert_close(hidden[real], theirs.hidden_states[-1][real], atol=1e-4, rtol=0)
        if kind == "generator":
            torch.testing.assert_close(ours.mlm_logits(hidden)[real], theirs.logits[real], atol=1e-4, rtol=0)
    if kind == "discriminator":  # its replaced-token head is not ours: dropped, and said so
        assert "discriminator head" in caplog.text and "no MLM head" in caplog.text


def test_electra_export_loads_back_in_transformers(electra, tmp_path):
    kind, out, hf = electra
    ours, tokenizer = load_hf(out)
    name, path = export_hf(ours, tmp_path / "export", tokenizer)
    assert name == "ELECTRA"
    back = transformers.AutoModelForMaskedLM.from_pretrained(path).eval()
    body = transformers.AutoModel.from_pretrained(path).eval()
    assert type(back).__name__ == "ElectraForMaskedLM" and back.config.embedding_size == 16
    ids, mask = padded_batch(hf.config.vocab_size)
    real = mask.bool()
    with torch.no_grad():
        hidden = ours(ids, attention_mask=mask)
        got = back(ids, attention_mask=mask, output_hidden_states=True)
        torch.testing.assert_close(got.hidden_states[-1][real], hidden[real], atol=1e-4, rtol=0)
        torch.testing.assert_close(body(ids, attention_mask=mask).last_hidden_state[real], hidden[real],
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(got.logits[real], ours.mlm_logits(hidden)[real], atol=1e-4, rtol=0)
        if kind == "generator":
            torch.testing.assert_close(got.logits[real], hf(ids, attention_mask=mask).logits[real], atol=1e-4, rtol=0)
    again, _ = load_hf(path)  # and our own export reads back
    with torch.no_grad():
        torch.testing.assert_close(again(ids, attention_mask=mask), ours(ids, attention_mask=mask))


def test_electra_as_init_from(electra):
    _, out, hf = electra
    pretrained = load_pretrained(f"hf:{out}")
    assert pretrained.backbone_config["embedding_size"] == 16
    assert pretrained.special_ids["<cls>"] == 2 and pretrained.special_ids["<sep>"] == 3
    assert pretrained.tokenizer.encode("a good film").tokens[0] == "[CLS]"
    model = build_backbone(pretrained.backbone_config)
    model.load_state_dict(pretrained.state_dict)
    ids, mask = padded_batch(hf.config.vocab_size)
    with torch.no_grad():
        real = mask.bool()
        theirs = hf(ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        torch.testing.assert_close(model.eval()(ids, attention_mask=mask)[real], theirs[real], atol=1e-4, rtol=0)


def test_embedding_size_is_validated_and_costs_a_projection():
    with pytest.raises(ConfigError, match="model.embedding_size=0"):
        EncoderConfig(embedding_size=0)
    with pytest.raises(ConfigError, match="model.embedding_size"):
        EncoderConfig(embedding_size="128")
    small = dict(vocab_size=100, n_layer=2, n_head=2, n_embd=32, block_size=16)
    same, projected = Encoder(EncoderConfig(**small)), Encoder(EncoderConfig(**small, embedding_size=8))
    assert Encoder(EncoderConfig(**small, embedding_size=32)).emb_proj is None  # equal widths: BERT
    assert projected.flops_per_token(16) - same.flops_per_token(16) == 6.0 * (8 * 32 + 32)
    logits = projected.mlm_logits(projected(torch.randint(0, 100, (2, 16))))
    assert logits.shape == (2, 16, 100)


def test_electra_export_refuses_what_electra_cannot_hold(tmp_path):
    small = dict(vocab_size=100, n_layer=1, n_head=2, n_embd=32, block_size=16, embedding_size=8)
    with pytest.raises(ConfigError, match="model.activation='gelu_tanh'.*model.activation=gelu"):
        export_hf(Encoder(EncoderConfig(**small, activation="gelu_tanh")), tmp_path / "a")
    with pytest.raises(ConfigError, match="model.position_offset=2"):
        export_hf(Encoder(EncoderConfig(**small, pad_id=1, position_offset=2)), tmp_path / "b")


def test_presets_have_the_published_parameter_counts():
    """conf/model/electra_small.yaml and roberta_base.yaml against transformers' own ElectraModel / RobertaModel
    (without pooler) built from the published configs."""
    from omegaconf import OmegaConf

    from tests.conftest import CONF_DIR

    def preset(name: str) -> dict:
        cfg = OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/model/{name}.yaml"))
        assert cfg.pop("init_from") is None
        return cfg

    electra_small = transformers.ElectraModel(transformers.ElectraConfig(
        vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12, num_attention_heads=4,
        intermediate_size=1024, max_position_embeddings=512))  # google/electra-small-discriminator
    n_electra = sum(p.numel() for p in electra_small.parameters())
    roberta_base = transformers.RobertaModel(transformers.RobertaConfig(
        vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=514, type_vocab_size=1, pad_token_id=1), add_pooling_layer=False)  # roberta-base
    n_roberta = sum(p.numel() for p in roberta_base.parameters())
    assert (n_electra, n_roberta) == (13_483_008, 124_055_040)
    ours = build_backbone(preset("electra_small"))
    # our MLM head (a generator head on the discriminator's body) is not part of ElectraModel
    assert ours.num_params() - sum(p.numel() for p in ours.mlm.parameters()) + ours.wte.weight.numel() == n_electra
    ours = build_backbone(preset("roberta_base"))
    assert ours.num_params() - sum(p.numel() for p in ours.mlm.parameters()) + ours.wte.weight.numel() == n_roberta
