"""pipelines/chat.py as a user runs it: an interactive session on scripted stdin (streamed replies, history cuts,
/reset, /exit), batch answers of a prompts file (deterministic for a seed), on tiny GPT and encoder-decoder runs.

The runs train 2 steps, so replies are noise; an "instruction-tuned" GPT is made from the plain one by adding the
ChatML tokens to its tokenizer and calling its task sft (what the SFT task's checkpoints hold), which makes the
chat markup one token a marker, as it is for real instruction-tuned checkpoints."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lit_llm.chat import Chat, answer_file, chat_loop
from lit_llm.chat_template import add_chat_tokens, template_for
from lit_llm.checkpointing import read_checkpoint
from lit_llm.errors import ConfigError
from lit_llm.run import train
from lit_llm.tokenization import tokenizer_from_str
from tests.conftest import CONF_DIR, ROOT, TINY

RUN = ["experiment=quickstart", *TINY, "trainer.max_steps=2", "test=false", "callbacks.generate_samples=null"]
GEN = ["generation.max_new_tokens=16"]


def _train(out: Path, cache: Path, overrides: list[str]) -> Path:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        train(compose("train", overrides=RUN + overrides + [f"paths.output_dir={out}", f"paths.cache_dir={cache}"]))
    return out


def _as_instruction_tuned(run: Path, out: Path) -> Path:
    """The run's checkpoint with <|im_start|>/<|im_end|> in its tokenizer and task "sft"."""
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    tokenizer = tokenizer_from_str(ckpt["lit_llm"]["tokenizer_json"])
    add_chat_tokens(tokenizer, template_for(None))
    assert tokenizer.get_vocab_size() <= ckpt["lit_llm"]["backbone_config"]["vocab_size"]  # rows to spare
    ckpt["lit_llm"].update(tokenizer_json=tokenizer.to_str(), task="sft")
    torch.save(ckpt, out)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir):
    """{"clm": a GPT run (block_size 64), "sft": its instruction-tuned copy (.ckpt), "seq2seq": an encoder-decoder run}."""
    base = tmp_path_factory.mktemp("chat_runs")
    gpt = _train(base / "gpt", cache_dir, ["model.block_size=64"])
    s2s = _train(base / "s2s", cache_dir, ["model=transformer_tiny", "model.block_size=64", "data.block_size=48",
                                            "task=seq2seq", "task.metric=none", "data.objective=denoise"])
    return {"clm": gpt, "sft": _as_instruction_tuned(gpt, base / "sft.ckpt"), "seq2seq": s2s}


def chat(args: list[str], stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / "chat.py"), *args], input=stdin, text=True,
                          capture_output=True, timeout=300, cwd=cwd, env=env)


def test_interactive_session_streams_cuts_history_and_resets(runs, tmp_path):
    script = "\n".join(["Hi, who are you?",
                        "Tell me more.",
                        "/reset",
                        "Hi, who are you?",
                        "x" * 80,  # alone longer than the 64-token context
                        "/exit",
                        "never read"]) + "\n"
    proc = chat([f"ckpt_path={runs['sft']}", "generation.max_new_tokens=8", "verbose=true",
                 "generation.temperature=0.8", "system_prompt=Be brief."],
                script, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    replies = [i for i, line in enumerate(out) if line.startswith("assistant> ")]
    assert len(replies) == 4 and all(out[i].strip() != "assistant>" for i in replies)  # "never read": not answered
    assert out[replies[0] + 1: replies[1]] == ["[history cut: dropped 1 oldest turn to fit the 64-token context]"]
    assert out[replies[1] + 1: replies[2]] == ["[history cleared]"]
    assert out[replies[3] - 1].startswith("[turn cut: kept the last ") and out[replies[3] - 1].endswith(
        " of 80 characters of your message to fit the 64-token context]")
    prompts = [line for line in proc.stderr.splitlines() if line.startswith("[prompt: ")]
    assert len(prompts) == 4
    assert prompts[0] == prompts[2] and prompts[0].endswith(" 0 earlier messages]")  # /reset: turn 1 again
    assert all(int(p.split()[1]) <= 64 - 8 for p in prompts)
    assert "not instruction-tuned" not in proc.stderr and "Traceback" not in proc.stderr


def test_plain_checkpoints_warn_once_and_end_at_end_of_input(runs, tmp_path):
    # a plain char tokenizer spells the markup out: ~50 of the 64 tokens; no /exit: the end of input ends it
    proc = chat([f"ckpt_path={runs['clm']}", "generation.max_new_tokens=4"], "Hello\nWhat now?\n", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("was not instruction-tuned") == 1 and "task is 'clm'" in proc.stderr
    assert sum(line.startswith("assistant> ") for line in proc.stdout.splitlines()) == 2


def test_encoder_decoder_session(runs):
    """The encoder-decoder streams its replies too (in-process: the command line is the GPT's above)."""
    bot = Chat.load(str(runs["seq2seq"]), {"max_new_tokens": 6, "temperature": 0.9})
    assert "task is 'seq2seq'" in bot.instruction_warning() and bot.room == 64  # the source with its <eos>
    out, err = io.StringIO(), io.StringIO()
    assert chat_loop(bot, ["Hello", "/reset", "x" * 70, "/exit", "Hi"], out=out, err=err, verbose=True) == 2
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("assistant> ") and lines[1] == "[history cleared]"
    assert lines[2].startswith("[turn cut: kept the last ") and lines[3].startswith("assistant> ")
    assert err.getvalue().count("earlier messages]") == 2


def test_batch_answers_are_written_once_per_row_and_reproducible(runs, tmp_path):
    rows = [{"prompt": "What is a cat?"},
            {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]},
            {"turns": ["Name a colour.", "And another one?"]}]
    prompts = tmp_path / "q.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sampling = {"max_new_tokens": 16, "temperature": 0.9, "top_k": 20, "top_p": None, "num_beams": 1}
    proc = chat([f"ckpt_path={runs['sft']}", f"prompts_file={prompts}", "seed=7",
                 *[f"generation.{k}={'null' if v is None else v}" for k, v in sampling.items()]], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = (tmp_path / "q.answers.jsonl").read_text()  # the default output: beside the prompts file
    answers = [json.loads(line) for line in written.splitlines()]
    assert [a["input"] for a in answers] == rows and [len(a["answers"]) for a in answers] == [1, 1, 2]
    assert [m["role"] for m in answers[2]["messages"]] == ["user", "assistant"] * 2
    assert answers[2]["messages"][1] == {"role": "assistant", "content": answers[2]["answers"][0]}
    settings = answers[0]["settings"]
    assert settings["seed"] == 7 and settings["generation"] == sampling and settings["task"] == "sft"
    # the same seed in another process: the same file
    again = Chat.load(str(runs["sft"]), sampling)
    assert answer_file(again, str(prompts), str(tmp_path / "again.jsonl"), seed=7)[1] == 3
    assert (tmp_path / "again.jsonl").read_text() == written
    answer_file(again, str(prompts), str(tmp_path / "other.jsonl"), seed=8)
    assert (tmp_path / "other.jsonl").read_text() != written


@pytest.mark.parametrize("kind", ["sft", "seq2seq"])
def test_beam_search_answers_in_one_piece(runs, kind, tmp_path):
    bot = Chat.load(str(runs[kind]), {"max_new_tokens": 8, "num_beams": 2})
    pieces = []
    fitted = bot.fit([], [], {"role": "user", "content": "Hi"})
    answer = bot.respond(fitted.ids, on_text=pieces.append)
    assert "".join(pieces) == answer


def test_generation_stops_at_the_end_of_turn_token(runs, monkeypatch):
    bot = Chat.load(str(runs["sft"]), {"max_new_tokens": 8})
    end = bot.tokenizer.token_to_id("<|im_end|>")
    assert bot.template.is_default and end is not None
    a, b = bot.tokenizer.token_to_id("o"), bot.tokenizer.token_to_id("k")
    monkeypatch.setattr(Chat, "_tokens", lambda self, x, g: iter([a, b, end, a, a]))
    assert bot.respond([a]) == "ok"


def test_user_errors(runs, tmp_path):
    with pytest.raises(ConfigError, match=r"generation\.max_new_tokens=64 leaves no room for a prompt in the 64-token"):
        Chat.load(str(runs["sft"]), {"max_new_tokens": 64})
    with pytest.raises(ConfigError, match=r"generation\.beams is not a generation option"):
        Chat.load(str(runs["sft"]), {"beams": 2})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
                   + "\n")
    bot = Chat.load(str(runs["sft"]), {"max_new_tokens": 16})
    with pytest.raises(ConfigError, match=r"bad\.jsonl, line 1: the conversation must end with a user message"):
        answer_file(bot, str(bad))
    with pytest.raises(ConfigError, match="would overwrite prompts_file"):
        answer_file(bot, str(bad), str(bad))
    with pytest.raises(ConfigError, match="system prompt and the chat template take"):
        bot.fit([{"role": "system", "content": "y" * 60}], [], {"role": "user", "content": "hi"})
