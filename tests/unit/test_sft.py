"""Instruction-tuning data: chat templates rendered as transformers renders them, the assistant tokens as the only
targets, packed conversations that never see each other, and clear errors on malformed rows."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lit_llm.chat_template import DEFAULT_CHAT_TEMPLATE, ChatTemplate, add_chat_tokens, template_for
from lit_llm.data.conversations import encode_conversation, parse_hh_rlhf, read_rows, to_messages
from lit_llm.data.sft import PackedCollator, pack_rows
from lit_llm.errors import ConfigError
from lit_llm.models.gpt import GPT, document_positions

# Chat templates as their models' tokenizer_config.json files give them (SmolLM2-Instruct: ChatML with a default
# system turn; Zephyr: trim_blocks/lstrip_blocks-sensitive layout with eos_token; Llama 3: bos_token, `| trim`;
# Mistral-Instruct: raise_exception on roles that do not alternate).
TEMPLATES = {
    "smollm2": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>"
               "system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
               "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "zephyr": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
              "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}"
              "\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
              "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
    "llama3": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
              "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
              "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
              "{% endif %}",
    "mistral": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) "
               "%}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
               "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif "
               "message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only "
               "user and assistant roles are supported!') }}{% endif %}{% endfor %}",
    "chatml_default": DEFAULT_CHAT_TEMPLATE,
}
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
MARKERS = ["<|im_start|>", "<|im_end|>", "<|user|>", "<|system|>", "<|assistant|>", "<|start_header_id|>",
           "<|end_header_id|>", "<|eot_id|>", "[INST]", "[/INST]"]

CHATS = [
    [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"},
     {"role": "assistant", "content": " It is 4. "}, {"role": "user", "content": "And 3 + 3?"},
     {"role": "assistant", "content": "6, of course."}],
    [{"role": "user", "content": "Ünïcödé — ok?\n\nTwo lines."}, {"role": "assistant", "content": "Sí. 日本語 too."}],
]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    from lit_llm import package_file

    text = open(package_file("corpora/quickstart.txt"), encoding="utf-8").read().splitlines()[:1500]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>", "<unk>", "<pad>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in MARKERS])
    return tok


def hf_tokenizer(tok, template: str):
    transformers = pytest.importorskip("transformers")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, **SPECIAL)


def _ids(out) -> list[int]:
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_templates_render_and_tokenize_exactly_as_transformers(tokenizer, name):
    hf = hf_tokenizer(tokenizer, TEMPLATES[name])
    ours = ChatTemplate(TEMPLATES[name], SPECIAL)
    for chat in CHATS:
        if name == "mistral":  # its template refuses system turns: both raise
            chat = [m for m in chat if m["role"] != "system"]
        for prefix in (chat, chat[:-1]):
            for gen in (False, True):
                expected = hf.apply_chat_template(prefix, tokenize=False, add_generation_prompt=gen)
                assert ours.render(prefix, add_generation_prompt=gen) == expected
        ids, _ = encode_conversation(tokenizer, ours, chat)
        assert ids.tolist() == _ids(hf.apply_chat_template(chat, tokenize=True))


def test_a_template_exception_is_a_config_error(tokenizer):
    hf = hf_tokenizer(tokenizer, TEMPLATES["mistral"])
    chat = [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]
    with pytest.raises(Exception, match="alternate"):
        hf.apply_chat_template(chat, tokenize=False)
    with pytest.raises(ConfigError, match="alternate"):
        ChatTemplate(TEMPLATES["mistral"], SPECIAL).render(chat)


def test_assistant_targets_equal_transformers_generation_mask(tokenizer):
    """transformers marks assistant tokens through `{% generation %}` blocks; our prefix-rendering finds the same
    tokens in the same template without them."""
    tagged = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}{% if message['role'] == "
              "'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endgeneration %}{% else %}"
              "{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<|im_start|>assistant\n' }}{% endif %}")
    hf = hf_tokenizer(tokenizer, tagged)
    for chat in CHATS:
        out = hf.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, targets = encode_conversation(tokenizer, template_for(None), chat)  # ChatML renders the same text
        assert ids.tolist() == list(out["input_ids"])
        assert targets.astype(int).tolist() == list(out["assistant_masks"])


def test_only_assistant_turns_are_targets(tokenizer):
    ids, targets = encode_conversation(tokenizer, template_for(None), CHATS[1])
    assert tokenizer.decode(ids[targets].tolist(), skip_special_tokens=False) == \
        " It is 4. <|im_end|>\n6, of course.<|im_end|>\n"
    assert "What is 2 + 2" in tokenizer.decode(ids[~targets].tolist(), skip_special_tokens=False)


def test_chatml_tokens_are_added_once():
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    assert add_chat_tokens(tok, template_for(None)) == ["<|im_start|>", "<|im_end|>"]
    assert tok.get_vocab_size() == 4 and add_chat_tokens(tok, template_for(None)) == []
    assert add_chat_tokens(tok, template_for(TEMPLATES["zephyr"])) == []  # a model's own template: its own tokens


@pytest.mark.parametrize("row, where, message", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "f.jsonl, line 3", "no assistant turn"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, "f.jsonl, line 3", r"messages\[0\]: 'role' is 'bot'"),
    ({"messages": [{"role": "user"}]}, "f.jsonl, line 3", r"messages\[0\]: field 'content' is missing"),
    ({"instruction": "Do it"}, "f.jsonl, line 3", "field 'output' is missing"),
    ({"prompt": "Q", "completion": 3}, "f.jsonl, line 3", "field 'completion' is a int"),
    ({"text": "plain"}, "f.jsonl, line 3", "no conversation found"),
])
def test_malformed_rows_name_file_line_and_field(row, where, message):
    with pytest.raises(ConfigError, match=f"^{where}.*{message}"):
        to_messages(row, where)


def test_read_rows_reports_the_line_of_bad_json(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "a", \n')
    rows = read_rows(path)
    assert next(rows)[0].endswith("chats.jsonl, line 1")
    with pytest.raises(ConfigError, match=r"chats.jsonl, line 3: not valid JSON"):
        next(rows)


def test_schemas_alpaca_sharegpt_and_system():
    assert to_messages({"instruction": "Add", "input": "2 and 3", "output": "5", "system": "S"}, "x") == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "Add\n\n2 and 3"},
        {"role": "assistant", "content": "5"}]
    assert to_messages({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "x") == [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert parse_hh_rlhf("\n\nHuman: hi\n\nAssistant: hello there\n\nHuman: ok", "x")[1] == {
        "role": "assistant", "content": "hello there"}


def test_packed_rows_keep_conversations_apart():
    """A packed batch's loss equals each conversation's own loss (weighted by its targets): no token sees another
    conversation, and positions restart with each."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    convs = []
    for n in (9, 6, 12, 5):
        ids = rng.integers(1, 50, n).astype(np.int32)
        targets = rng.random(n) < 0.6
        targets[0] = False
        convs.append((ids, targets))
    lengths = np.array([len(c[0]) for c in convs])
    groups = pack_rows(lengths, 20)
    assert groups == [[0, 1], [2, 3]]
    items = [{"ids": np.concatenate([convs[i][0] for i in g]), "targets": np.concatenate([convs[i][1] for i in g]),
              "lengths": lengths[g], "example_index": g[0]} for g in groups]
    batch = PackedCollator(pad_id=0, packed=True)(items)
    assert batch["document_ids"].shape == batch["input_ids"].shape
    for pe in ("learned", "rope"):
        model = GPT(dict(arch="gpt", vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=16, pos_embedding=pe))
        model.eval()
        logits = model(batch["input_ids"], document_ids=batch["document_ids"])
        packed = F.cross_entropy(logits.transpose(1, 2), batch["labels"], reduction="sum")
        alone = PackedCollator(pad_id=0, packed=True)([{"ids": c[0], "targets": c[1], "lengths": [len(c[0])],
                                                        "example_index": 0} for c in convs])
        assert "document_ids" not in alone  # one conversation per row: no mask needed
        separate = F.cross_entropy(model(alone["input_ids"]).transpose(1, 2), alone["labels"], reduction="sum")
        assert (batch["labels"] != -100).sum() == (alone["labels"] != -100).sum()
        torch.testing.assert_close(packed, separate, rtol=1e-5, atol=1e-4)


def test_labels_are_next_targets_within_a_conversation():
    a = (np.array([1, 2, 3, 4], np.int32), np.array([0, 0, 1, 1], bool))
    b = (np.array([5, 6, 7], np.int32), np.array([0, 1, 1], bool))
    batch = PackedCollator(pad_id=0, packed=True)([{"ids": np.concatenate([a[0], b[0]]),
                                                    "targets": np.concatenate([a[1], b[1]]), "lengths": [4, 3],
                                                    "example_index": 0}])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6]]
    assert batch["labels"].tolist() == [[-100, 3, 4, -100, 6, 7]]  # 4 -> 5 crosses conversations: no label
    assert document_positions(batch["document_ids"]).tolist() == [[0, 1, 2, 3, 0, 1]]


def test_sft_file_is_read_with_its_schemas(tmp_path):
    from lit_llm.data.sft import SFTDataModule

    rows = [json.loads(line) for line in open("tests/data/tiny_chats.jsonl")]
    assert len(rows) == 48
    dm = SFTDataModule(files="tests/data/tiny_chats.jsonl", cache_dir=str(tmp_path), val_fraction=0.1)
    raw = dm.load_raw()
    assert len(raw["train"]) + len(raw["validation"]) == 48 and dm.test_names == ["validation"]
    with pytest.raises(ConfigError, match="exactly one source"):
        SFTDataModule(cache_dir=str(tmp_path))
