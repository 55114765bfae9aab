"""Chat templates: a conversation (a list of `{"role", "content"}` messages) rendered as the model's text.

A Hugging Face tokenizer's own Jinja `chat_template` (kept in `run_config.chat_template` by `model.init_from`) is
rendered exactly as `transformers`' `apply_chat_template(..., tokenize=False)` renders it: the same sandboxed
Jinja environment (trim_blocks, lstrip_blocks, loop controls, its `tojson`, `raise_exception`, `strftime_now`,
`{% generation %}` blocks) and the tokenizer's special tokens (`bos_token`, `eos_token`, ...) as variables
(tests/unit/test_chat_template.py checks equality against transformers on real templates).

A tokenizer without a template (our own BPE, GPT-2, T5) gets `DEFAULT_CHAT_TEMPLATE`, ChatML:

    <|im_start|>system\\nYou are ...<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello<|im_end|>\\n

whose two markers `CHAT_TOKENS` are added to the tokenizer as special tokens (`add_chat_tokens`) and whose
`<|im_end|>` ends every turn (generation stops there).

`ChatTemplate.assistant_spans(messages)` gives the rendered text and the character span of every assistant
turn (its content and end-of-turn marker, what supervised fine-tuning trains on), found by rendering the
conversation up to each assistant turn with and without it; templates must render a conversation's prefix as
a prefix of its full text (all common ones do; one that does not is refused with the conversation named).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence

from lit_llm.errors import ConfigError

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHAT_TOKENS = (IM_START, IM_END)
ROLES = ("system", "user", "assistant")

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@lru_cache(maxsize=16)
def compile_template(source: str):
    """A Jinja template compiled as transformers compiles chat templates (chat_template_utils)."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):  # `{% generation %}...{% endgeneration %}`: rendered as its body
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template and the special tokens its variables name ({"bos_token": "<s>", ...})."""

    source: str = DEFAULT_CHAT_TEMPLATE
    special_tokens: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_default(self) -> bool:
        return self.source == DEFAULT_CHAT_TEMPLATE

    @property
    def end_of_turn(self) -> str | None:
        """The text that ends an assistant turn (a stop string for generation): `<|im_end|>` for ChatML-style
        templates, else the tokenizer's end of sequence."""
        if IM_END in self.source:
            return IM_END
        for marker in ("<|eot_id|>", "<end_of_turn>", "<|end|>"):  # Llama 3, Gemma, Phi-3
            if marker in self.source:
                return marker
        return self.special_tokens.get("eos_token")

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
        try:
            return compile_template(self.source).render(messages=list(messages), tools=None, documents=None,
                                                        add_generation_prompt=add_generation_prompt,
                                                        **self.special_tokens)
        except Exception as e:  # a template's raise_exception (e.g. "roles must alternate") or a syntax error
            raise ConfigError(f"the chat template cannot render this conversation: {e}") from e

    def assistant_spans(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
        """(rendered text, [(start, end) character span of each assistant turn]): from where the template's
        generation prompt ends to where the turn (with its end-of-turn marker) ends."""
        text = self.render(messages)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True) if i else ""
            upto = self.render(messages[: i + 1])
            if not (upto.startswith(before) and text.startswith(upto)):
                raise ConfigError(
                    "the chat template does not render a conversation's first turns as the start of the whole "
                    f"conversation (turn {i} of {len(messages)}), so its assistant turns cannot be found; give "
                    "data.chat_template=default (ChatML) or a template without that rewriting")
            spans.append((len(before), len(upto)))
        return text, spans


def template_for(chat_template: str | None, special_tokens: Mapping[str, str] | None = None) -> ChatTemplate:
    """The template a run uses: the tokenizer's own (`chat_template`), else ChatML (`DEFAULT_CHAT_TEMPLATE`)."""
    return ChatTemplate(chat_template or DEFAULT_CHAT_TEMPLATE, dict(special_tokens or {}))


def run_template(run_config: Mapping[str, Any] | None, tokenizer) -> ChatTemplate:
    """The template a checkpoint was trained with (`run_config.chat_template`, else ChatML), its special-token
    variables (`bos_token`, `eos_token`, ...) named from the tokenizer (a Hugging Face model's own, as recorded in
    `run_config.special_ids`)."""
    from lit_llm.data.base import resolve_special_ids

    run_config = run_config or {}
    ids = resolve_special_ids(tokenizer, run_config.get("special_ids"))
    names = {f"{name}_token": tokenizer.id_to_token(i) for name, i in ids.items()
             if name in ("bos", "eos", "unk", "pad", "sep", "cls", "mask")}
    return template_for(run_config.get("chat_template"), names)


def missing_chat_tokens(tokenizer, template: ChatTemplate) -> list[str]:
    """The ChatML markers the default template needs that `tokenizer` lacks ([] for a tokenizer's own template)."""
    if not template.is_default:
        return []
    return [tok for tok in CHAT_TOKENS if tokenizer.token_to_id(tok) is None]


def add_chat_tokens(tokenizer, template: ChatTemplate) -> list[str]:
    """Add the ChatML markers to `tokenizer` (in place) as special tokens, after its last id; returns those added."""
    from tokenizers import AddedToken

    missing = missing_chat_tokens(tokenizer, template)
    if missing:
        tokenizer.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in missing])
    return missing


__all__ = ["ChatTemplate", "DEFAULT_CHAT_TEMPLATE", "CHAT_TOKENS", "IM_START", "IM_END", "ROLES", "template_for", "run_template",
           "compile_template", "add_chat_tokens", "missing_chat_tokens"]
