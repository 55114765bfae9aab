"""Generate text from a checkpoint: python pipelines/generate.py ckpt_path=<run dir> prompt="..."

ckpt_path: a run directory, a .ckpt, a model.safetensors, or an int8 export directory (pipelines/export.py
--quantize int8; CPU only), all read by lit_llm.checkpointing.load_backbone.

- prompt="...": prints the generation;
- prompts_file=prompts.txt (one per line): writes JSON lines {"prompt", "generation"} to `output`;
- neither, in a terminal: an interactive loop (empty line or Ctrl-D ends it).
Generation options come from conf/generate.yaml (`generation.*`). A user error (lit_llm.errors.ConfigError)
prints one line `error: ...` and exits with status 2.
"""
import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import lit_llm  # noqa: F401  (registers the config resolvers)
from lit_llm.errors import ConfigError, cli_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
@cli_errors()
def main(cfg: DictConfig) -> None:
    from lit_llm.inference import Generator
    from lit_llm.utils_io import atomic_write_text

    gen = Generator(cfg.ckpt_path, OmegaConf.to_container(cfg.generation, resolve=True), device=cfg.device,
                    source_prefix=cfg.source_prefix, seed=cfg.seed)
    if cfg.prompt is not None:
        print(gen([str(cfg.prompt)])[0])
    elif cfg.prompts_file is not None:
        path = Path(cfg.prompts_file)
        if not path.is_file():
            raise ConfigError(f"prompts_file={path}: no such file (one prompt per line)")
        prompts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        out = Path(cfg.output or f"{path}.generated.jsonl")
        texts = [t for i in range(0, len(prompts), 32) for t in gen(prompts[i : i + 32])]
        atomic_write_text(out, "".join(json.dumps({"prompt": p, "generation": t}, ensure_ascii=False) + "\n"
                                       for p, t in zip(prompts, texts)))
        print(f"{len(prompts)} generations written to {out}")
    elif sys.stdin.isatty():
        print("prompt (empty line to quit):", file=sys.stderr)
        for line in sys.stdin:
            if not line.strip():
                break
            print(gen([line.rstrip("\n")])[0], flush=True)
    else:
        raise ConfigError("give prompt=\"...\" or prompts_file=<file>, or run in a terminal for a prompt loop")


if __name__ == "__main__":
    main()
