"""Export a lit-llm checkpoint to Hugging Face format (config.json + model.safetensors + tokenizer.json).

    python pipelines/export.py <run dir | .ckpt | model.safetensors> <output dir>

A GPT becomes GPT2LMHeadModel, an encoder BertForMaskedLM; `transformers` loads the directory with
`from_pretrained(<output dir>)` and gives the same outputs (tests/unit/test_hf_io.py).
"""
import argparse
import sys

import lit_llm  # noqa: F401
from lit_llm.checkpointing import load_backbone
from lit_llm.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a run directory, a .ckpt or a model.safetensors")
    parser.add_argument("out_dir", help="directory to write (created)")
    args = parser.parse_args(argv)
    from lit_llm.models import hf_io

    try:
        model, tokenizer = load_backbone(args.checkpoint)
        export = hf_io.export_hf_gpt2 if model.config.arch == "gpt" else hf_io.export_hf_bert
        export(model, args.out_dir, tokenizer=tokenizer)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_dir} ({'GPT-2' if model.config.arch == 'gpt' else 'BERT'} format)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
