"""Conversations: user rows in the common instruction schemas -> a list of `{"role", "content"}` messages, and a
conversation -> token ids with the tokens a model is trained to write marked.

Schemas a row may use (`to_messages`; one per row, looked for in this order):
- `messages` (or `conversations`): a list of `{"role": system|user|assistant, "content": str}` (ShareGPT's
  `{"from": human|gpt|system, "value"}` is read too);
- Alpaca: `instruction`, optional `input` (appended to the instruction after a blank line), `output`;
- `prompt` and `completion` (or `response`).
Any of them may add a `system` field (a system turn first). A malformed row is a ConfigError naming the file,
line and missing or wrong field.

`read_rows(path)` reads JSON Lines, a JSON list (or `{"data": [...]}`) or parquet, with line numbers for errors.
`encode_conversation` renders a conversation with a `ChatTemplate` and returns its token ids and, per token,
whether it belongs to an assistant turn (the supervised fine-tuning targets).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from lit_llm.chat_template import ROLES, ChatTemplate
from lit_llm.errors import ConfigError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}
SCHEMAS = "a `messages` list of {role, content}, Alpaca's instruction/input/output, or prompt/completion"


def _text(row: Mapping[str, Any], key: str, where: str, optional: bool = False) -> str | None:
    value = row.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        got = "missing" if key not in row else f"a {type(value).__name__}, not a string"
        raise ConfigError(f"{where}: field {key!r} is {got}")
    return value


def message_list(items: Any, key: str, where: str) -> list[dict[str, str]]:
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: field {key!r} must be a non-empty list of messages")
    out = []
    for j, item in enumerate(items):
        at = f"{where}, {key}[{j}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{at}: a message must be an object with 'role' and 'content'")
        if "from" in item and "role" not in item:  # ShareGPT
            role = SHAREGPT_ROLES.get(str(item["from"]).lower())
            if role is None:
                raise ConfigError(f"{at}: 'from'={item['from']!r} is not one of {sorted(SHAREGPT_ROLES)}")
            out.append({"role": role, "content": _text(item, "value", at)})
            continue
        role = item.get("role")
        if role not in ROLES:
            raise ConfigError(f"{at}: 'role' is {'missing' if role is None else repr(role)}; use one of {list(ROLES)}")
        out.append({"role": role, "content": _text(item, "content", at)})
    return out


def to_messages(row: Mapping[str, Any], where: str, need_assistant: bool = True) -> list[dict[str, str]]:
    """The conversation of one row (see the module docstring); `where` (e.g. "chats.jsonl, line 7") starts errors."""
    if not isinstance(row, Mapping):
        raise ConfigError(f"{where}: a row must be a JSON object with {SCHEMAS}")
    if "messages" in row or "conversations" in row:
        key = "messages" if "messages" in row else "conversations"
        messages = message_list(row[key], key, where)
    elif "instruction" in row or "output" in row:
        instruction, extra = _text(row, "instruction", where), _text(row, "input", where, optional=True)
        user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": _text(row, "output", where)}]
    elif "prompt" in row:
        answer_key = "completion" if "completion" in row or "response" not in row else "response"
        messages = [{"role": "user", "content": _text(row, "prompt", where)},
                    {"role": "assistant", "content": _text(row, answer_key, where)}]
    else:
        raise ConfigError(f"{where}: no conversation found (fields: {sorted(row)[:8]}); a row needs {SCHEMAS}")
    system = row.get("system")
    if isinstance(system, str) and system.strip() and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise ConfigError(f"{where}: the conversation has no assistant turn to learn from")
    return messages


def read_rows(path: str | os.PathLike, key: str | None = None) -> Iterator[tuple[str, Any]]:
    """(where, row) of every row of a JSON Lines, JSON or parquet file; `where` names the file and line. A file that
    is not UTF-8 text or not parquet is a ConfigError naming `key` (the config key, when given), the file and line."""
    from lit_llm.data.sources import read_parquet_rows, read_text, text_lines

    path = Path(path)
    name = path.name
    if name.endswith(".parquet"):
        for i, row in enumerate(read_parquet_rows(path, key)):
            yield f"{path}, row {i + 1}", row
        return
    if name.endswith(".json"):
        text = read_text(path, key)
        try:
            data = json.loads(text)
        except json.JSONDecodeError:  # many ".json" files are JSON Lines
            data = None
        if data is not None:
            rows = data.get("data") if isinstance(data, Mapping) else data
            if not isinstance(rows, list):
                raise ConfigError(f"{path}: a JSON file must hold a list of rows (or {{'data': [...]}})")
            for i, row in enumerate(rows):
                yield f"{path}, item {i}", row
            return
    for n, line in text_lines(path, key):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}, line {n}: not valid JSON ({e.msg} at column {e.colno}); fix or remove the "
                              "line") from None
        yield f"{path}, line {n}", row


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_hh_rlhf(transcript: str, where: str) -> list[dict[str, str]]:
    """An Anthropic HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") as messages."""
    parts = _HH_TURN.split(transcript)
    if len(parts) < 3 or parts[0].strip():
        raise ConfigError(f"{where}: not an HH-RLHF transcript (turns start with '\\n\\nHuman: ' or "
                          "'\\n\\nAssistant: ')")
    return [{"role": "user" if who == "Human" else "assistant", "content": text.strip()}
            for who, text in zip(parts[1::2], parts[2::2])]


# HH-RLHF: only the 2,312 test pairs of harmless-base are here, so they are cut once, by a seeded permutation,
# into disjoint parts: chats for instruction tuning (the chosen side), DPO training pairs, DPO validation and the
# held-out DPO test pairs. Changing the fractions or the seed changes every part: keep them.
HH_RLHF_PARTS = {"sft": 0.4, "dpo_validation": 0.05, "dpo_test": 0.15}  # the rest: "dpo_train"
HH_RLHF_SEED = 1234


def hh_rlhf_parts(n: int) -> dict[str, np.ndarray]:
    """{part: sorted row indices} of an HH-RLHF file of `n` rows (parts: HH_RLHF_PARTS and "dpo_train")."""
    from lit_llm.data.base import hold_out_indices, holdout_size

    names = list(HH_RLHF_PARTS)
    parts = hold_out_indices(n, [holdout_size(n, HH_RLHF_PARTS[k]) for k in names], HH_RLHF_SEED)
    return dict(zip([*names, "dpo_train"], parts))


class ChatDataMixin:
    """What a data module of conversations has (mixed in before `DataModuleProtocol`): the chat template its
    conversations are rendered with. `data.chat_template` (`chat_template_setting`): null/"auto" = the pretrained
    tokenizer's own template (or the one the checkpoint was trained with), else ChatML; "chatml" = ChatML always;
    any other text = a Jinja template (or a path to a .jinja file). `builders.attach_tokenizer` resolves it and
    calls `set_chat_template` before the tokenizer is attached."""

    uses_chat_template = True
    chat_template_setting: str | None = None
    chat_template: ChatTemplate = ChatTemplate()

    def resolve_chat_template(self, own: str | None, special_tokens: Mapping[str, str]) -> ChatTemplate:
        from lit_llm.chat_template import template_for

        setting = self.chat_template_setting
        if setting in (None, "auto"):
            return template_for(own, special_tokens)
        if setting == "chatml":
            return template_for(None, special_tokens)
        if not isinstance(setting, str):
            raise ConfigError(f"data.chat_template={setting!r} must be null, 'chatml', a Jinja template or a .jinja file")
        if setting.endswith((".jinja", ".j2")) or ("{" not in setting and os.path.isfile(setting)):
            if not os.path.isfile(setting):
                raise ConfigError(f"data.chat_template={setting}: no such file")
            setting = Path(setting).read_text(encoding="utf-8")
        return template_for(setting, special_tokens)

    def set_chat_template(self, template: ChatTemplate) -> None:
        self.chat_template = template


def encode_conversation(tokenizer, template: ChatTemplate, messages: Sequence[Mapping[str, str]]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [n], targets bool [n]): the rendered conversation's tokens (the template supplies every special
    token, as transformers' `apply_chat_template(tokenize=True)`) and which of them lie in an assistant turn."""
    text, spans = template.assistant_spans(messages)
    enc = tokenizer.encode(text, add_special_tokens=False)
    ids = np.asarray(enc.ids, dtype=np.int32)
    starts = np.asarray([start for start, _ in enc.offsets], dtype=np.int64)
    targets = np.zeros(len(ids), dtype=bool)
    for lo, hi in spans:  # a few turns per conversation: vectorised over the tokens
        targets |= (starts >= lo) & (starts < hi)
    return ids, targets


def prompt_ids(tokenizer, template: ChatTemplate, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """The tokens a model continues to answer `messages`: the conversation with the template's generation prompt."""
    return tokenizer.encode(template.render(messages, add_generation_prompt=True), add_special_tokens=False).ids


__all__ = ["ChatDataMixin", "to_messages", "message_list", "read_rows", "encode_conversation", "prompt_ids", "SCHEMAS", "parse_hh_rlhf", "hh_rlhf_parts",
           "HH_RLHF_PARTS"]
