"""DPO (`lit_llm.tasks.dpo`, `lit_llm.data.preference`): the loss against a hand computation, summed target
log-probabilities, the frozen reference (a copy, or LoRA with its adapters off), preference rows and their
errors, the HH-RLHF parts and the tokens a pair is trained on."""
from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from lit_llm.chat_template import ChatTemplate, add_chat_tokens
from lit_llm.data.collate import IGNORE_INDEX
from lit_llm.data.conversations import hh_rlhf_parts, read_rows
from lit_llm.data.preference import (
    PreferenceCollator,
    PreferenceDataModule,
    encode_side,
    pair_of_row,
    truncate_left,
)
from lit_llm.errors import ConfigError
from lit_llm.models.gpt import GPT
from lit_llm.peft import base_state_dict, lora_modules
from lit_llm.tasks.base import build_optimizer
from lit_llm.tasks.dpo import NO_INIT_FROM, REFERENCE, DPOTask, dpo_loss, sequence_logps
from lit_llm.tokenization import train_char
from tests.conftest import requires_data, shared_data_dir

V = 64
MODEL = dict(arch="gpt", vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
OPTIM = dict(lr=1e-2, warmup_steps=0, weight_decay=0.0)
LORA = dict(kind="lora", r=4, alpha=8, targets=["q", "v"])


def tiny_task(peft: dict | None = None, dropout: float = 0.0, **kwargs) -> DPOTask:
    torch.manual_seed(0)
    task = DPOTask(dict(MODEL, dropout=dropout), OPTIM, peft=peft, **kwargs)
    task.on_pretrained_loaded()  # as lit_llm.run does once model.init_from's weights are in
    return task


def pair_batch(B: int = 3, T: int = 10, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random pairs: labels are the next ids on the last positions (the answer), -100 on the rest."""
    g = torch.Generator().manual_seed(seed)
    batch = {}
    for side, answer in (("chosen", 4), ("rejected", 6)):
        ids = torch.randint(0, V, (B, T + 1), generator=g)
        labels = ids[:, 1:].clone()
        labels[:, : T - answer] = IGNORE_INDEX
        batch[f"{side}_ids"], batch[f"{side}_labels"] = ids[:, :-1], labels
    batch["example_index"] = torch.arange(B)
    return batch


# -- the loss -------------------------------------------------------------------------------------
def test_dpo_loss_equals_a_hand_computation():
    pc, pr, rc, rr = (torch.tensor(v) for v in ([-10.0, -3.0], [-12.0, -2.0], [-11.0, -3.0], [-11.0, -2.5]))
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.1)
    # pair 0: rewards 0.1*(1) and 0.1*(-1): margin 0.2; pair 1: 0.1*0 and 0.1*0.5: margin -0.05
    assert torch.allclose(chosen, torch.tensor([0.1, 0.0])) and torch.allclose(rejected, torch.tensor([-0.1, 0.05]))
    expected = [math.log(1 + math.exp(-0.2)), math.log(1 + math.exp(0.05))]  # -log sigmoid(margin)
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-6)
    # a policy equal to its reference: margin 0, loss log 2 whatever beta
    same, _, _ = dpo_loss(pc, pr, pc, pr, beta=0.5)
    assert torch.allclose(same, torch.full((2,), math.log(2.0)))


def test_label_smoothing_is_conservative_dpo():
    margin = 0.1 * (torch.tensor([2.0, -1.0]) - torch.tensor([0.5, 0.5]))
    losses, _, _ = dpo_loss(torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.5]), torch.zeros(2), torch.zeros(2),
                            beta=0.1, label_smoothing=0.2)
    expected = [-0.8 * math.log(1 / (1 + math.exp(-m))) - 0.2 * math.log(1 / (1 + math.exp(m)))
                for m in margin.tolist()]
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-6)
    # the loss of a flipped pair with eps = the loss of the pair with 1 - eps: symmetric smoothing
    flipped, _, _ = dpo_loss(torch.tensor([0.5, 0.5]), torch.tensor([2.0, -1.0]), torch.zeros(2), torch.zeros(2),
                             beta=0.1, label_smoothing=0.8)
    assert torch.allclose(losses, flipped, atol=1e-6)


def test_summed_target_logps_equal_a_manual_gather():
    torch.manual_seed(0)
    model = GPT(MODEL).eval()
    batch = pair_batch()
    ids, labels = batch["chosen_ids"], batch["chosen_labels"]
    with torch.no_grad():
        logits = model(ids)
    logps, tokens = sequence_logps(logits, labels)
    log_probs = torch.log_softmax(logits.double(), -1)
    for b in range(ids.size(0)):
        manual = sum(log_probs[b, t, labels[b, t]] for t in range(ids.size(1)) if labels[b, t] != IGNORE_INDEX)
        assert abs(float(logps[b]) - float(manual)) < 1e-4
        assert int(tokens[b]) == 4


@pytest.mark.parametrize("bad", [dict(beta=0.0), dict(beta=-1), dict(label_smoothing=0.5), dict(label_smoothing=-0.1)])
def test_bad_settings_are_config_errors(bad):
    with pytest.raises(ConfigError, match="task.beta|task.label_smoothing"):
        DPOTask(MODEL, OPTIM, **bad)


def test_only_gpt_backbones_and_lora_needs_a_frozen_base():
    with pytest.raises(ConfigError, match="model.arch=gpt"):
        DPOTask(dict(MODEL, arch="encoder"), OPTIM)
    with pytest.raises(ConfigError, match="train_norms=false"):
        DPOTask(MODEL, OPTIM, peft=dict(LORA, train_norms=True))


def test_without_pretrained_weights_there_is_no_reference():
    task = DPOTask(MODEL, OPTIM)  # on_pretrained_loaded never called: no model.init_from
    with pytest.raises(ConfigError, match="model.init_from=<sft run>"):
        task.setup("fit")
    assert "model.init_from=<sft run>" in NO_INIT_FROM


# -- the reference model --------------------------------------------------------------------------
def test_reference_stays_frozen_while_the_policy_moves():
    task = tiny_task(dropout=0.1)
    before = {k: v.clone() for k, v in task.reference.state_dict().items()}
    assert all(not p.requires_grad for p in task.reference.parameters())
    opt = build_optimizer(task, task.optim, 10)["optimizer"]
    in_optimizer = {id(p) for group in opt.param_groups for p in group["params"]}
    assert not in_optimizer & {id(p) for p in task.reference.parameters()}
    task.train()
    assert task.training and task.backbone.training and not task.reference.training  # no dropout in the reference
    batch = pair_batch()
    first = task.pair_scores(batch)
    for _ in range(3):
        opt.zero_grad()
        task.pair_scores(batch)["losses"].mean().backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in task.reference.state_dict().items())
    moved = task.pair_scores(batch)
    assert not torch.equal(first["logp_chosen"], moved["logp_chosen"])  # the policy moved
    assert float(moved["losses"].mean().detach()) < float(first["losses"].mean().detach())
    # the reference's log-probabilities are those of the weights it was copied from, in eval mode
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
    labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
    original = GPT(dict(MODEL, dropout=0.1)).eval()
    original.load_state_dict(before)
    assert torch.allclose(task.reference_logps(ids, labels), sequence_logps(original(ids), labels)[0])


def test_untrained_policy_has_zero_margin():
    task = tiny_task().eval()
    scores = task.pair_scores(pair_batch())
    metrics = task.pair_metrics(scores)
    assert torch.equal(scores["margin"], torch.zeros(3)) and float(metrics["preference_acc"].sum()) == 0.0
    assert torch.allclose(scores["losses"], torch.full((3,), math.log(2.0)))
    assert set(metrics) == {"loss", "rewards/chosen", "rewards/rejected", "rewards/margin", "preference_acc",
                            "logps/chosen", "logps/rejected", "logp_preference_acc", "logp_preference_acc_norm"}
    raw = (scores["logp_chosen"] > scores["logp_rejected"]).float()
    norm = (scores["logp_chosen"] / 4 > scores["logp_rejected"] / 6).float()
    assert torch.equal(metrics["logp_preference_acc"], raw) and torch.equal(metrics["logp_preference_acc_norm"], norm)


def test_lora_reference_is_the_base_model():
    task = tiny_task(peft=LORA)
    assert task.reference is None  # no copy
    for m in lora_modules(task.backbone).values():  # adapters that change the outputs
        for b in m.lora_B.values():
            torch.nn.init.normal_(b, std=0.5)
    batch = pair_batch()
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
    labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
    base = GPT(MODEL).eval()
    base.load_state_dict(base_state_dict(task.backbone))
    task.train()
    reference = task.reference_logps(ids, labels)
    assert torch.allclose(reference, sequence_logps(base(ids), labels)[0], atol=1e-5)
    assert task.backbone.training and all(m.scaling == 2.0 for m in lora_modules(task.backbone).values())  # restored
    policy = sequence_logps(task.backbone(ids), labels)[0]
    assert not torch.allclose(policy, reference, atol=1e-3)
    ckpt = {"state_dict": task.state_dict()}
    assert not any(k.startswith(REFERENCE) for k in ckpt["state_dict"])


def test_the_reference_is_saved_and_restored_by_checkpoints():
    task = tiny_task()
    with torch.no_grad():
        for p in task.backbone.parameters():  # the policy trained away from its reference
            p.add_(0.01)
    ckpt = {"state_dict": task.state_dict()}
    assert any(k.startswith(REFERENCE) for k in ckpt["state_dict"])
    fresh = DPOTask(MODEL, OPTIM)  # as pipelines/evaluate.py builds it: no model.init_from
    fresh.on_load_checkpoint(ckpt)
    fresh.load_state_dict(ckpt["state_dict"])
    fresh.setup("test")
    for k, v in task.reference.state_dict().items():
        assert torch.equal(fresh.reference.state_dict()[k], v)
    assert not torch.equal(fresh.reference.wte.weight, fresh.backbone.wte.weight)
    assert not any(p.requires_grad for p in fresh.reference.parameters()) and not fresh.reference.training


# -- rows -------------------------------------------------------------------------------------------
HH_CHOSEN = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken..."
HH_REJECTED = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No."


def test_row_schemas():
    user = [{"role": "user", "content": "Q?"}]
    assert pair_of_row({"prompt": "Q?", "chosen": "good", "rejected": "bad"}, "w") == (user, "good", "bad")
    full = [*user, {"role": "assistant", "content": "good"}]
    row = {"prompt": user, "chosen": full, "rejected": [{"role": "assistant", "content": "bad"}]}
    assert pair_of_row(row, "w") == (user, "good", "bad")
    conv = {"chosen": full, "rejected": [*user, {"role": "assistant", "content": "bad"}]}
    assert pair_of_row(conv, "w") == (user, "good", "bad")
    prompt, chosen, rejected = pair_of_row({"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, "w")
    assert [m["role"] for m in prompt] == ["user", "assistant", "user"] and (chosen, rejected) == (
        "Why did the chicken...", "No.")
    other = HH_REJECTED.replace("Tell me a joke", "Tell me a story")
    assert pair_of_row({"chosen": HH_CHOSEN, "rejected": other}, "w") is None  # prompts differ: dropped


@pytest.mark.parametrize("row, field", [
    ({"prompt": "Q", "chosen": "a"}, "'rejected' is missing"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "field 'prompt' is a int"),
    ({"prompt": "Q", "chosen": {"text": "a"}, "rejected": "b"}, "field 'chosen' is a dict"),
    ({"prompt": "Q", "chosen": "a", "rejected": [{"role": "user", "content": "b"}]}, "field 'rejected' must end"),
    ({"prompt": "Q", "chosen": "a", "rejected": [{"role": "robot", "content": "b"}]}, r"rejected\[0\]: 'role'"),
    ({"chosen": "Human: hi", "rejected": HH_REJECTED}, "field 'chosen'.*not an HH-RLHF transcript"),
    ({"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"}, "ends with an assistant"),
])
def test_malformed_rows_name_file_line_and_field(tmp_path, row, field):
    path = tmp_path / "pairs.jsonl"
    good = {"prompt": "Q", "chosen": "a", "rejected": "b"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    dm = PreferenceDataModule(train_files=str(path), validation_files=str(path), cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=rf"pairs\.jsonl, line 2.*{field}"):
        dm.load_raw()


def test_exactly_one_source():
    with pytest.raises(ConfigError, match="exactly one source"):
        PreferenceDataModule()
    with pytest.raises(ConfigError, match="exactly one source"):
        PreferenceDataModule(train_files="a.jsonl", hh_rlhf_file="b.jsonl")


@requires_data("hh_rlhf_harmless_base/test.jsonl")
def test_hh_rlhf_parts_train_validation_test_disjoint_from_sft(tmp_path):
    path = shared_data_dir() / "hh_rlhf_harmless_base" / "test.jsonl"
    dm = PreferenceDataModule(hh_rlhf_file=str(path), cache_dir=str(tmp_path))
    raw = dm.load_raw()
    rows = list(read_rows(path))
    parts = hh_rlhf_parts(len(rows))
    seen = {}
    for split, part in (("train", "dpo_train"), ("validation", "dpo_validation"), ("test", "dpo_test")):
        used = set(raw[split]["source_row"])
        stats = dm.load_stats[split]
        assert used <= set(parts[part].tolist())
        assert stats["rows"] == len(parts[part]) and stats["pairs"] + stats["dropped_prompt_mismatch"] == stats["rows"]
        seen[split] = used
    assert not (seen["train"] & seen["validation"] or seen["train"] & seen["test"] or seen["validation"] & seen["test"])
    assert not (seen["train"] | seen["validation"] | seen["test"]) & set(parts["sft"].tolist())
    assert sum(dm.load_stats[s]["dropped_prompt_mismatch"] for s in seen) <= 5  # 5 in the whole file
    assert dm.test_names == ["test"]
    first = dm.pair("test", 0)  # the pair is the row's: its chosen transcript ends with the chosen answer
    assert rows[first["source_row"]][1]["chosen"].rstrip().endswith(first["chosen"][-20:])


# -- tokens -------------------------------------------------------------------------------------------
def char_tokenizer(texts):
    tok = train_char(texts)
    add_chat_tokens(tok, ChatTemplate())
    return tok


def test_targets_are_the_final_assistant_turn_and_labels_are_shifted():
    template = ChatTemplate()
    prompt = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
              {"role": "user", "content": "joke?"}]
    tok = char_tokenizer(["hi hello joke? no yes abc\nuser assistant"])
    ids, start, end = encode_side(tok, template, prompt, "no")
    assert tok.decode(ids[start:end].tolist(), skip_special_tokens=False).replace(" ", "") == "no<|im_end|>\n"
    assert "hello" in tok.decode(ids[:start].tolist())  # the earlier assistant turn is context only
    ids2, start2, end2 = encode_side(tok, template, prompt, "yes abc")
    batch = PreferenceCollator(pad_id=0)([
        {"chosen_ids": ids, "chosen_span": np.array([start, end]), "rejected_ids": ids2,
         "rejected_span": np.array([start2, end2]), "example_index": 0}])
    assert batch["chosen_ids"].shape == batch["rejected_ids"].shape == (1, max(len(ids), len(ids2)) - 1)
    labels = batch["chosen_labels"][0]
    targets = (labels != IGNORE_INDEX).nonzero().squeeze(1)
    assert targets.tolist() == list(range(start - 1, end - 1))  # position t predicts token t + 1
    assert labels[targets].tolist() == ids[start:end].tolist()
    assert (batch["rejected_labels"][0] != IGNORE_INDEX).sum() == end2 - start2


def test_truncation_keeps_the_last_tokens():
    ids = np.arange(10, dtype=np.int32)
    kept, start, end = truncate_left(ids, 7, 10, 5)
    assert kept.tolist() == [5, 6, 7, 8, 9] and (start, end) == (2, 5)
    kept, start, end = truncate_left(ids, 3, 10, 5)
    assert (start, end) == (0, 5)  # the answer's start is cut: its last tokens stay


def test_data_module_tokenizes_caches_and_warns_about_truncation(tmp_path, caplog):
    rows = [{"prompt": f"question {i}?", "chosen": "yes " * (1 + i % 3), "rejected": "no"} for i in range(20)]
    rows[0]["chosen"] = "a very long answer " * 5
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = PreferenceDataModule(train_files=str(path), max_length=60, val_fraction=0.2, batch_size=4,
                              cache_dir=str(tmp_path / "cache"))
    dm.load_raw()
    tok = char_tokenizer([*dm.train_texts(), "\nuser assistant"])
    dm.set_chat_template(ChatTemplate())
    dm.set_tokenizer(tok)
    with caplog.at_level(logging.WARNING, logger="lit_llm"):
        dm.prepare_data()
        dm.setup("fit")
    assert dm.stats["train"]["pairs"] == 16 and dm.stats["validation"]["pairs"] == 4
    assert dm.test_names == ["validation"]
    cut = dm.stats["train"]["chosen_truncated"] + dm.stats["validation"]["chosen_truncated"]
    assert cut == 1 and "truncated to data.max_length=60" in caplog.text
    batch = next(iter(dm.train_dataloader()))
    assert batch["chosen_ids"].shape[1] <= 60 and batch["chosen_ids"].shape == batch["rejected_labels"].shape
    assert ((batch["chosen_labels"] != IGNORE_INDEX).sum(1) > 0).all()
    # another template: other tokens, another cache entry
    first = dm.tokenized_dir
    dm.set_chat_template(ChatTemplate("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                                      "{% if add_generation_prompt %}assistant: {% endif %}"))
    assert dm.tokenized_dir != first
