"""Export a lit-llm checkpoint to Hugging Face format (config.json + model.safetensors + tokenizer.json).

    python pipelines/export.py <run dir | .ckpt | model.safetensors> <output dir>

A GPT becomes GPT2LMHeadModel (LlamaForCausalLM / Qwen2ForCausalLM with the Llama options), an encoder
BertForMaskedLM (RobertaForMaskedLM, ElectraForMaskedLM), an encoder-decoder T5ForConditionalGeneration or
BartForConditionalGeneration; `transformers` loads the directory with `from_pretrained(<output dir>)` and gives
the same outputs (tests/unit/test_hf_*.py). A user error (lit_llm.errors.ConfigError: no such checkpoint, a model
setting without a Hugging Face equivalent) prints one line `error: ...` and exits with status 2.
"""
import argparse
import sys

import lit_llm  # noqa: F401
from lit_llm.checkpointing import load_backbone
from lit_llm.errors import ConfigError, cli_errors


@cli_errors()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a run directory, a .ckpt or a model.safetensors")
    parser.add_argument("out_dir", help="directory to write (created)")
    args = parser.parse_args(argv)
    from lit_llm.models import hf_io

    model, tokenizer = load_backbone(args.checkpoint)
    try:
        name, _ = hf_io.export_hf(model, args.out_dir, tokenizer=tokenizer)
    except ConfigError as e:
        raise ConfigError(f"{args.checkpoint}: {e}") from None
    print(f"wrote {args.out_dir} ({name} format)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
