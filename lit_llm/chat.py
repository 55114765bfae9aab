"""Chat with a checkpoint (`pipelines/chat.py`): a conversation kept as messages, rendered each turn with the chat
template the checkpoint was trained with, answered by a GPT or an encoder-decoder.

- `Chat.load(ckpt_path, generation)`: the backbone, tokenizer and template (`lit_llm.chat_template.run_template`:
  the run's own, else ChatML) of a lit-llm task checkpoint (a .ckpt, or a run directory: the checkpoint its test
  used, as pipelines/evaluate.py picks it).
- `Chat.fit(system, history, user)`: the prompt to answer. When prompt + max_new_tokens does not fit the context
  (a GPT's block_size; an encoder-decoder's source: block_size with its <eos>) the oldest turns (a user message and
  the replies after it) are dropped, never the system messages or the current user turn; when the current turn
  alone is too long its start is cut. Each cut comes back as one notice line.
- `Chat.respond(prompt_ids, generator, on_text)`: the reply, its text given to `on_text` as it is generated
  (`TextStream`): a GPT token by token (`decoding.stream_tokens`), an encoder-decoder too (`decoding.stream_seq2seq`)
  for greedy and sampled decoding; beam search (num_beams > 1) cannot stream, so its reply comes in one piece when
  done. Generation stops at the template's end of turn (`<|im_end|>`) or the tokenizer's end of sequence; an end of
  turn that is no single token (a tokenizer never instruction-tuned) is matched as text.
- `chat_loop`: the interactive session (/reset, /exit, end of input); `answer_file`: batch answers of a JSON Lines
  file of conversations, deterministic for a seed (every conversation starts from the same seeded generator, so an
  answer does not depend on the rows before it).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TextIO

import torch

from lit_llm.chat_template import ChatTemplate, missing_chat_tokens, run_template
from lit_llm.errors import ConfigError
from lit_llm.models.decoding import (
    GENERATION_OPTIONS,
    _check_options,
    beam_search_gpt,
    generate_seq2seq,
    stream_seq2seq,
    stream_tokens,
)

INSTRUCTION_TASKS = ("sft", "dpo")  # task kinds whose checkpoints were trained to answer in the chat template
GPT_SAMPLING = ("max_new_tokens", "temperature", "top_k", "top_p", "use_cache")  # what `stream_tokens` takes
BEAM_ONLY = ("num_beams", "length_penalty", "early_stopping")
Message = dict[str, str]


class TextStream:
    """Token ids -> text given to `on_text` as it becomes final. Byte-level BPE splits a character over several
    tokens, so each step decodes the whole answer and passes on only the new suffix, holding back a trailing
    incomplete character (U+FFFD) and any tail that could be the start of `stop_text`."""

    def __init__(self, tokenizer, stop_text: str | None = None, on_text: Callable[[str], Any] | None = None):
        self.tokenizer, self.stop_text, self.on_text = tokenizer, stop_text or None, on_text
        self.ids: list[int] = []
        self.text = ""  # passed on so far

    def _decoded(self) -> tuple[str, bool]:
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if self.stop_text and self.stop_text in full:
            return full[: full.index(self.stop_text)], True
        return full, False

    def _emit(self, upto: str) -> None:
        if len(upto) > len(self.text) and upto.startswith(self.text):
            if self.on_text is not None:
                self.on_text(upto[len(self.text):])
            self.text = upto

    def push(self, token_id: int) -> bool:
        """Add a token; True when the stop text is complete (the text before it has been passed on)."""
        self.ids.append(token_id)
        full, stopped = self._decoded()
        if stopped:
            self._emit(full)
            return True
        stable = full.rstrip("\ufffd")
        if self.stop_text:
            for k in range(min(len(self.stop_text) - 1, len(stable)), 0, -1):
                if stable.endswith(self.stop_text[:k]):
                    stable = stable[:-k]
                    break
        self._emit(stable)
        return False

    def finish(self) -> str:
        """The answer (before any stop text), its remaining text passed on."""
        full, _ = self._decoded()
        self._emit(full)
        return full


@dataclass
class Fitted:
    """A prompt that fits: the messages rendered, their token ids, and what was cut to fit (as notice lines)."""

    messages: list[Message]
    ids: list[int]
    notices: list[str] = field(default_factory=list)

    @property
    def history(self) -> list[Message]:
        """The kept messages before the current user turn, system messages excluded."""
        return [m for m in self.messages[:-1] if m["role"] != "system"]


def split_turns(history: list[Message]) -> list[list[Message]]:
    """Turns, oldest first: each user message with the messages after it up to the next user message."""
    turns: list[list[Message]] = []
    for m in history:
        if m["role"] == "user" or not turns:
            turns.append([])
        turns[-1].append(m)
    return turns


@dataclass
class Chat:
    """A loaded checkpoint ready to answer conversations."""

    path: str
    model: Any
    tokenizer: Any
    template: ChatTemplate
    task: str
    generation: dict
    special: dict[str, int]
    source_prefix: str = ""
    device: str = "cpu"

    # -- loading
    @classmethod
    def load(cls, ckpt_path: str, generation: Mapping[str, Any], device: str = "cpu",
             source_prefix: str = "") -> "Chat":
        from lit_llm.checkpointing import backbone_from_checkpoint, read_checkpoint
        from lit_llm.data.base import resolve_special_ids
        from lit_llm.evaluation import eval_checkpoint_path
        from lit_llm.tokenization import tokenizer_from_str

        path = eval_checkpoint_path(ckpt_path)
        content = read_checkpoint(path)
        meta = content.get("lit_llm") or {}
        if not meta.get("tokenizer_json"):
            raise ConfigError(f"ckpt_path={path} is not a lit-llm task checkpoint with a tokenizer inside; "
                              "give a run directory or a .ckpt written by pipelines/train.py")
        arch = meta["backbone_config"].get("arch", "gpt")
        if arch not in ("gpt", "encoder_decoder"):
            raise ConfigError(f"ckpt_path={path} holds a {arch!r} backbone, which does not generate text; use a GPT "
                              "(clm, sft) or encoder-decoder (seq2seq) checkpoint")
        model = backbone_from_checkpoint(content).to(device).eval()
        tokenizer = tokenizer_from_str(meta["tokenizer_json"])
        run_config = meta.get("run_config") or {}
        special = resolve_special_ids(tokenizer, run_config.get("special_ids"))
        chat = cls(path, model, tokenizer, run_template(run_config, tokenizer), str(meta.get("task")),
                   check_generation(generation), special, source_prefix or "", device)
        chat.check_options()
        return chat

    @property
    def arch(self) -> str:
        return self.model.config.arch

    @property
    def context(self) -> int:
        return self.model.config.block_size

    @property
    def room(self) -> int:
        """The most prompt tokens: a GPT's context less max_new_tokens; an encoder's context (its end included)."""
        if self.arch == "gpt":
            return self.context - self.generation["max_new_tokens"]
        return self.context

    @property
    def eos_id(self) -> int:
        for name in ("eos", "sep"):
            if name in self.special:
                return self.special[name]
        raise ConfigError(f"ckpt_path={self.path}: the tokenizer has no end-of-sequence token to stop at")

    @property
    def end_of_turn_id(self) -> int | None:
        marker = self.template.end_of_turn
        return None if marker is None else self.tokenizer.token_to_id(marker)

    @property
    def stop_ids(self) -> set[int]:
        return {self.eos_id} | ({self.end_of_turn_id} - {None})

    def check_options(self) -> None:
        g = self.generation
        try:
            _check_options(g["num_beams"], g["temperature"], g["top_k"], g["top_p"], g["max_new_tokens"],
                           g.get("min_new_tokens", 0), g.get("length_penalty", 1.0))
        except ValueError as e:
            raise ConfigError(f"generation.{e}") from None
        if self.arch == "gpt" and g["max_new_tokens"] >= self.context:
            raise ConfigError(f"generation.max_new_tokens={g['max_new_tokens']} leaves no room for a prompt in the "
                              f"{self.context}-token context of ckpt_path={self.path}; give a smaller one")

    def instruction_warning(self) -> str | None:
        """One line when the checkpoint was not instruction-tuned (its replies follow the template by chance)."""
        missing = missing_chat_tokens(self.tokenizer, self.template)
        if self.task in INSTRUCTION_TASKS and not missing:
            return None
        why = f"its task is {self.task!r}, not {' or '.join(INSTRUCTION_TASKS)}" if self.task not in INSTRUCTION_TASKS \
            else f"its tokenizer lacks the chat template's tokens {missing}"
        return (f"warning: ckpt_path={self.path} was not instruction-tuned ({why}); it continues the rendered "
                "conversation as plain text")

    # -- prompts
    def prompt_ids(self, messages: list[Message]) -> list[int]:
        text = self.template.render(messages, add_generation_prompt=True)
        if self.arch == "gpt":
            return self.tokenizer.encode(text, add_special_tokens=False).ids
        # as the SFT data ends every source (seq2seq.end_sequence: <eos>, or the tokenizer's own specials)
        from lit_llm.data.seq2seq import end_sequence, ends_added

        enc = self.tokenizer.encode(self.source_prefix + text, add_special_tokens=False)
        return end_sequence(self.tokenizer, enc, self.eos_id, len(enc.ids) + 1 + ends_added(self.tokenizer))

    def fit(self, system: list[Message], history: list[Message], user: Message) -> Fitted:
        """The conversation system + history + user with the oldest turns dropped, or the user turn's start cut,
        until it fits `room` tokens (see the module docstring)."""
        turns = split_turns(history)
        for dropped in range(len(turns) + 1):
            messages = system + [m for turn in turns[dropped:] for m in turn] + [user]
            ids = self.prompt_ids(messages)
            if len(ids) <= self.room:
                return Fitted(messages, ids, self._dropped_notice(dropped))
        return self._cut_user_turn(system, user, len(turns))

    def _dropped_notice(self, dropped: int) -> list[str]:
        return [f"[history cut: dropped {dropped} oldest turn{'s' if dropped > 1 else ''} to fit the "
                f"{self.context}-token context]"] if dropped else []

    def _cut_user_turn(self, system: list[Message], user: Message, dropped: int) -> Fitted:
        content = user["content"]
        offsets = [start for start, _ in self.tokenizer.encode(content, add_special_tokens=False).offsets]
        empty = len(self.prompt_ids(system + [{"role": "user", "content": ""}]))
        if empty > self.room:
            what = "the system prompt and the chat template take" if system else "the chat template takes"
            raise ConfigError(f"{what} {empty} tokens, more than the {self.room} a prompt may have in the "
                              f"{self.context}-token context (generation.max_new_tokens="
                              f"{self.generation['max_new_tokens']}); shorten system_prompt or max_new_tokens")
        cut, excess = 0, max(1, len(offsets) + empty - self.room)  # tokens of the user's text left out; an estimate
        while excess > 0:  # tokens may merge differently once cut: cut more until it fits (the empty text does)
            cut = min(len(offsets), cut + excess)
            kept = content[offsets[cut]:] if cut < len(offsets) else ""
            messages = system + [{"role": "user", "content": kept}]
            ids = self.prompt_ids(messages)
            excess = len(ids) - self.room
        notices = self._dropped_notice(dropped)
        notices.append(f"[turn cut: kept the last {len(kept)} of {len(content)} characters of your message to fit "
                       f"the {self.context}-token context]")
        return Fitted(messages, ids, notices)

    # -- answers
    def respond(self, ids: list[int], generator: torch.Generator | None = None,
                on_text: Callable[[str], Any] | None = None) -> str:
        """The reply to prompt `ids`; its text goes to `on_text` as it is generated (beam search: when done)."""
        stop_text = None if self.end_of_turn_id is not None else self.template.end_of_turn
        stream = TextStream(self.tokenizer, stop_text, on_text)
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        for token in self._tokens(x, generator):
            if token in self.stop_ids or stream.push(token):
                break
        return stream.finish()

    def _tokens(self, x: torch.Tensor, generator: torch.Generator | None) -> Iterator[int]:
        g = self.generation
        if g["num_beams"] > 1:  # the best beam, all at once
            if self.arch == "gpt":  # SFT turns end with the end-of-turn token: beams finish there
                end = self.end_of_turn_id if self.end_of_turn_id is not None else self.eos_id
                opts = {k: v for k, v in g.items() if k not in ("temperature", "top_k", "top_p")}
                out = beam_search_gpt(self.model, x, eos_id=end, pad_id=self.special.get("pad", end), **opts)
            else:
                out = generate_seq2seq(self.model, x, None, start_id=self.special["bos"], eos_id=self.eos_id,
                                       pad_id=self.special.get("pad", self.eos_id), **g)
            yield from out[0].tolist()
            return
        if self.arch == "gpt":
            tokens = stream_tokens(self.model, x, stop_ids=self.stop_ids, generator=generator,
                                   **{k: v for k, v in g.items() if k in GPT_SAMPLING})
        else:
            tokens = stream_seq2seq(self.model, x, None, start_id=self.special["bos"], stop_ids=self.stop_ids,
                                    generator=generator, **{k: v for k, v in g.items() if k not in BEAM_ONLY})
        try:
            yield from tokens
        finally:
            tokens.close()

    def new_generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def settings(self, seed: int, system_prompt: str | None) -> dict:
        """What an answer depends on besides the conversation (kept with batch answers)."""
        return {"checkpoint": self.path, "task": self.task, "seed": seed, "generation": dict(self.generation),
                "system_prompt": system_prompt, "source_prefix": self.source_prefix or None,
                "chat_template": "ChatML (default)" if self.template.is_default else "the checkpoint's own"}


def check_generation(generation: Mapping[str, Any]) -> dict:
    """generation.* with defaults; unknown keys refused (a typo would be ignored)."""
    unknown = sorted(set(generation) - set(GENERATION_OPTIONS))
    if unknown:
        raise ConfigError(f"generation.{unknown[0]} is not a generation option; known: {', '.join(GENERATION_OPTIONS)}")
    out = {"max_new_tokens": 64, "temperature": 0.0, "top_k": None, "top_p": None, "num_beams": 1}
    out.update({k: v for k, v in generation.items() if v is not None})
    return out


def system_messages(system_prompt: str | None) -> list[Message]:
    return [{"role": "system", "content": system_prompt}] if system_prompt else []


# -- interactive ------------------------------------------------------------------------------------------
def read_lines(stdin: TextIO, stderr: TextIO) -> Iterator[str]:
    """Lines of the user's input; in a terminal each read shows a `you> ` prompt (on stderr)."""
    tty = stdin.isatty()
    while True:
        if tty:
            stderr.write("you> ")
            stderr.flush()
        line = stdin.readline()
        if not line:
            return
        yield line.rstrip("\n")


def chat_loop(chat: Chat, lines: Iterable[str], system_prompt: str | None = None, seed: int = 1234,
              out: TextIO = sys.stdout, err: TextIO = sys.stderr, verbose: bool = False,
              label: str = "assistant> ") -> int:
    """The interactive session: each line is a user turn, answered (streamed to `out` after `label`) with the
    history so far; `/reset` clears the history (the system prompt stays), `/exit` or the end of input ends it.
    Returns the number of turns answered."""
    system, history = system_messages(system_prompt), []
    generator = chat.new_generator(seed)
    answered = 0

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    for line in lines:
        command = line.strip()
        if command in ("/exit", "/quit"):
            break
        if command == "/reset":
            history = []
            write("[history cleared]\n")
            continue
        if not command:
            continue
        user = {"role": "user", "content": line}
        fitted = chat.fit(system, history, user)
        for notice in fitted.notices:
            write(notice + "\n")
        if verbose:
            err.write(f"[prompt: {len(fitted.ids)} tokens, {len(fitted.history)} earlier messages]\n")
            err.flush()
        write(label)
        answer = chat.respond(fitted.ids, generator, on_text=write)
        write("\n")
        history = fitted.history + [fitted.messages[-1], {"role": "assistant", "content": answer}]
        answered += 1
    return answered


# -- batch ------------------------------------------------------------------------------------------------
def conversation_of(row: Any, where: str, system_prompt: str | None) -> tuple[list[Message], list[str]]:
    """(messages before the first turn to answer, the user turns to answer in order) of a prompts-file row:
    {"messages": [...]} ending with a user message, {"prompt": "..."}, or {"turns": ["q1", "q2", ...]};
    a row's "system" field (or a leading system message) wins over `system_prompt`."""
    from lit_llm.data.conversations import to_messages

    if not isinstance(row, Mapping):
        raise ConfigError(f"{where}: a row must be a JSON object with 'messages', 'prompt' or 'turns'")
    system = row.get("system") if isinstance(row.get("system"), str) and row["system"].strip() else system_prompt
    if "messages" in row or "conversations" in row:
        messages = to_messages(row, where, need_assistant=False)
        if messages[-1]["role"] != "user":
            raise ConfigError(f"{where}: the conversation must end with a user message to answer "
                              f"(it ends with a {messages[-1]['role']} message)")
        if messages[0]["role"] != "system":
            messages = system_messages(system) + messages
        return messages[:-1], [messages[-1]["content"]]
    if "turns" in row:
        turns = row["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise ConfigError(f"{where}: field 'turns' must be a non-empty list of strings (the user's turns)")
        return system_messages(system), list(turns)
    if isinstance(row.get("prompt"), str):
        return system_messages(system), [row["prompt"]]
    raise ConfigError(f"{where}: no conversation found (fields: {sorted(row)[:8]}); a row needs 'messages' (ending "
                      "with a user message), 'prompt' or 'turns'")


def answer_conversation(chat: Chat, before: list[Message], turns: list[str], seed: int) -> dict:
    """Answers to each user turn in order, every answer joining the history of the next turn."""
    system = [m for m in before if m["role"] == "system"]
    history = [m for m in before if m["role"] != "system"]
    transcript = list(before)
    generator = chat.new_generator(seed)
    answers, notices = [], []
    for turn in turns:
        user = {"role": "user", "content": turn}
        fitted = chat.fit(system, history, user)
        answer = chat.respond(fitted.ids, generator)
        answers.append(answer)
        notices.extend(fitted.notices)
        reply = {"role": "assistant", "content": answer}
        history = fitted.history + [fitted.messages[-1], reply]
        transcript += [user, reply]
    return {"answers": answers, "messages": transcript, **({"notices": notices} if notices else {})}


def default_output(prompts_file: Path) -> Path:
    """Next to the prompts file: q.jsonl -> q.answers.jsonl."""
    stem = prompts_file.name.removesuffix(".jsonl").removesuffix(".json")
    return prompts_file.with_name(f"{stem}.answers.jsonl")


def answer_file(chat: Chat, prompts_file: str, output: str | None = None, seed: int = 1234,
                system_prompt: str | None = None) -> tuple[Path, int]:
    """Answer every conversation of `prompts_file` (JSON Lines or a JSON list) into `output` (default
    `default_output`), written atomically: one row per conversation {"index", "input", "answers", "messages",
    ["notices"], "settings"}. Returns (output path, rows)."""
    from lit_llm.data.conversations import read_rows
    from lit_llm.utils_io import atomic_write_text

    path = Path(prompts_file)
    if not path.is_file():
        raise ConfigError(f"prompts_file={path}: no such file (JSON Lines: one conversation per line)")
    out = Path(output) if output else default_output(path)
    if out.resolve() == path.resolve():
        raise ConfigError(f"output={out} would overwrite prompts_file; give another output")
    rows = [(where, row, *conversation_of(row, where, system_prompt)) for where, row in read_rows(path)]
    settings = chat.settings(seed, system_prompt)
    lines = []
    for index, (_, row, before, turns) in enumerate(rows):
        result = answer_conversation(chat, before, turns, seed)
        lines.append(json.dumps({"index": index, "input": row, **result, "settings": settings}, ensure_ascii=False))
    atomic_write_text(out, "".join(line + "\n" for line in lines))
    return out, len(lines)


__all__ = ["Chat", "Fitted", "TextStream", "chat_loop", "answer_file", "answer_conversation", "conversation_of",
           "read_lines", "split_turns", "check_generation", "default_output", "INSTRUCTION_TASKS"]
