"""Export a lit-llm checkpoint to Hugging Face format (config.json + model.safetensors + tokenizer.json).

    python pipelines/export.py <run dir | .ckpt | model.safetensors> <output dir>
    python pipelines/export.py <LoRA run dir> <output dir> --merge    # base + adapters merged into plain weights
    python pipelines/export.py <run dir | .ckpt> <output dir> --quantize int8  # int8 linear layers, for CPU inference

A GPT becomes GPT2LMHeadModel (LlamaForCausalLM / Qwen2ForCausalLM with the Llama options), an encoder
BertForMaskedLM (RobertaForMaskedLM, ElectraForMaskedLM), an encoder-decoder T5ForConditionalGeneration or
BartForConditionalGeneration; `transformers` loads the directory with `from_pretrained(<output dir>)` and gives
the same outputs (tests/unit/test_hf_*.py). `--quantize int8` writes lit-llm's own format instead (Hugging Face has
no equivalent of it): <output dir>/model-int8.safetensors (int8 weights, one float scale per output row, the backbone
config in the metadata) + tokenizer.json; generate from it (CPU) with `pipelines/generate.py ckpt_path=<output dir>`,
load it with `lit_llm.compression.load_int8(<output dir>)`. A user error (lit_llm.errors.ConfigError: no such checkpoint, a model
setting without a Hugging Face equivalent) prints one line `error: ...` and exits with status 2.
"""
import argparse
import sys
from pathlib import Path

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
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8: linear layers quantized for CPU inference, in lit-llm's format (not Hugging Face's)")
    args = parser.parse_args(argv)
    from lit_llm.compression import int8_metadata
    from lit_llm.models import hf_io

    int8 = int8_metadata(args.checkpoint)
    if int8 is not None:
        raise ConfigError(f"{args.checkpoint} is an int8 export already; export the float32 checkpoint it came from "
                          f"({int8.get('lit_llm_source', '<run dir>')})")
    if not args.checkpoint.endswith(".safetensors") and is_lora_checkpoint(args.checkpoint) and not args.merge:
        raise ConfigError(f"{args.checkpoint} is a LoRA run: its adapters have no place in a Hugging Face model; "
                          "add --merge to write base + adapters merged into plain weights")
    model, tokenizer = load_backbone(args.checkpoint)  # a LoRA run's: merged
    if args.quantize:
        return export_int8(model, tokenizer, args.checkpoint, Path(args.out_dir))
    try:
        name, _ = hf_io.export_hf(model, args.out_dir, tokenizer=tokenizer)
    except ConfigError as e:
        raise ConfigError(f"{args.checkpoint}: {e}") from None
    print(f"wrote {args.out_dir} ({name} format)")
    return 0


def export_int8(model, tokenizer, source: str, out_dir: Path) -> int:
    from lit_llm.compression import INT8_FILE, quantize_int8, save_int8

    fp32_bytes = sum(t.numel() * t.element_size() for t in {t.data_ptr(): t for t in model.state_dict().values()}.values())
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_int8(quantize_int8(model, source), out_dir / INT8_FILE, source=source)
    if tokenizer is not None:
        tokenizer.save(str(out_dir / "tokenizer.json"))
    size = path.stat().st_size
    print(f"wrote {path} (int8: {size / 2**20:.2f} MiB, {size / fp32_bytes:.0%} of the {fp32_bytes / 2**20:.2f} MiB "
          "float32 weights); generate from it with pipelines/generate.py ckpt_path=<out dir>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
