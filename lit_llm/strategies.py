"""Lightning strategies built from plain config values (Hydra cannot write a set of classes in YAML)."""
from __future__ import annotations

from pytorch_lightning.strategies import FSDPStrategy


def transformer_blocks() -> set[type]:
    """The block classes of every backbone: the units FSDP wraps and checkpoints."""
    from lit_llm.models.encoder_decoder import DecoderBlock
    from lit_llm.models.layers import Block

    return {Block, DecoderBlock}


def fsdp(sharding_strategy: str = "FULL_SHARD", activation_checkpointing: bool = False, cpu_offload: bool = False,
         state_dict_type: str = "full", **kwargs) -> FSDPStrategy:
    """FSDPStrategy wrapping each transformer block (`trainer=fsdp`); **kwargs go to FSDPStrategy."""
    blocks = transformer_blocks()
    return FSDPStrategy(auto_wrap_policy=blocks, sharding_strategy=sharding_strategy,
                        activation_checkpointing_policy=blocks if activation_checkpointing else None,
                        cpu_offload=cpu_offload, state_dict_type=state_dict_type, **kwargs)
