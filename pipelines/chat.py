"""Chat with a checkpoint: python pipelines/chat.py ckpt_path=<run dir | .ckpt> [system_prompt="..."]

- no prompt, no prompts_file: an interactive session on stdin/stdout (a terminal or piped lines): each line is a
  user turn, the reply streams as it is generated; /reset clears the history (the system prompt stays), /exit or
  end of input ends it;
- prompt="...": prints the reply to one user message;
- prompts_file=q.jsonl: answers every conversation ({"messages"}, {"prompt"} or {"turns"} rows) into `output`
  (default q.answers.jsonl beside it), deterministically for `seed`.
Options: conf/chat.yaml (generation.* as conf/generate.yaml). A user error prints one line `error: ...` (exit 2).
"""
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

import lit_llm  # noqa: F401  (registers the config resolvers)
from lit_llm.errors import cli_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="chat")
@cli_errors()
def main(cfg: DictConfig) -> None:
    from lit_llm.chat import Chat, answer_file, chat_loop, read_lines

    chat = Chat.load(cfg.ckpt_path, OmegaConf.to_container(cfg.generation, resolve=True), device=cfg.device,
                     source_prefix=cfg.source_prefix)
    warning = chat.instruction_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if cfg.prompts_file is not None:
        out, n = answer_file(chat, cfg.prompts_file, cfg.output, seed=cfg.seed, system_prompt=cfg.system_prompt)
        print(f"{n} conversations answered in {out}")
    elif cfg.prompt is not None:
        chat_loop(chat, [str(cfg.prompt)], cfg.system_prompt, cfg.seed, verbose=cfg.verbose, label="")
    else:
        print(f"chat with {chat.path} ({chat.arch}, {chat.context}-token context): /reset clears the history, "
              "/exit or Ctrl-D ends", file=sys.stderr, flush=True)
        try:
            chat_loop(chat, read_lines(sys.stdin, sys.stderr), cfg.system_prompt, cfg.seed, verbose=cfg.verbose)
        except KeyboardInterrupt:  # Ctrl-C ends the session as /exit does, without a traceback
            print(file=sys.stderr)


if __name__ == "__main__":
    main()
