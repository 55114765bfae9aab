"""Export a lit-llm checkpoint to Hugging Face format (config.json + model.safetensors + tokenizer.json).

    python pipelines/export.py <run dir | .ckpt | model.safetensors> <output dir>
    python pipelines/export.py <LoRA run dir> <output dir> --merge    # base + adapters merged into plain weights

A GPT becomes GPT2LMHeadModel (LlamaForCausalLM / Qwen2ForCausalLM with the Llama options), an encoder
BertForMaskedLM (RobertaForMaskedLM, ElectraForMaskedLM), an encoder-decoder T5ForConditionalGeneration or
BartForConditionalGeneration; `transformers` loads the directory with `from_pretrained(<output dir>)` and gives
the same outputs (tests/unit/test_hf_*.py). A user error (lit_llm.errors.ConfigError: no such checkpoint, a model
setting without a Hugging Face equivalent) prints one line `error: ...` and exits with status 2.
"""
import argparse
import sys

import lit_llm  # noqa: F401
from lit_llm.checkpointing import is_lora_checkpoint, load_backbone
from lit_llm.errors import ConfigError, cli_errors


@cli_errors()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a run directory, a .ckpt or a model.safetensors")
    parser.add_argument("out_dir", help="directory to write (created)")
    parser.add_argument("--merge", action="store_true",
                        help="a LoRA run (task.peft=lora): fold the adapters into the base weights (required for one)")
    args = parser.parse_args(argv)
    from lit_llm.models import hf_io

    if not args.checkpoint.endswith(".safetensors") and is_lora_checkpoint(args.checkpoint) and not args.merge:
        raise ConfigError(f"{args.checkpoint} is a LoRA run: its adapters have no place in a Hugging Face model; "
                          "add --merge to write base + adapters merged into plain weights")
    model, tokenizer = load_backbone(args.checkpoint)  # a LoRA run's: merged
    try:
        name, _ = hf_io.export_hf(model, args.out_dir, tokenizer=tokenizer)
    except ConfigError as e:
        raise ConfigError(f"{args.checkpoint}: {e}") from None
    print(f"wrote {args.out_dir} ({name} format)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
