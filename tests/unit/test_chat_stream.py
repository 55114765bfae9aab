"""Streaming decoding picks exactly the tokens of batch decoding (same seed), and chat text streams whole
characters only."""
import pytest
import torch

from lit_llm.models import GPT, GPTConfig, generate
from lit_llm.models.decoding import generate_seq2seq, stream_seq2seq, stream_tokens
from lit_llm.models.encoder_decoder import EncoderDecoder, EncoderDecoderConfig

V = 97


def gpt(pos="learned") -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, block_size=32, n_layer=2, n_head=2, n_embd=32, pos_embedding=pos)).eval()


def seeded(seed=123):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("pos", ["learned", "rope"])
@pytest.mark.parametrize("opts", [dict(temperature=0.0), dict(temperature=1.0, top_k=20),
                                  dict(temperature=0.8, top_p=0.9)])
@pytest.mark.parametrize("T, new", [(5, 20), (28, 12)])  # 28 + 12 > block_size: the sliding-window fallback
def test_stream_tokens_equals_generate(pos, opts, T, new):
    model = gpt(pos)
    x = torch.randint(0, V, (1, T), generator=seeded(1))
    reference = generate(model, x, new, generator=seeded(), **opts)[0, T:].tolist()
    assert list(stream_tokens(model, x, new, generator=seeded(), **opts)) == reference
    assert list(stream_tokens(model, x, new, generator=seeded(), use_cache=False, **opts)) == reference


def test_stream_tokens_stops_after_a_stop_id_as_generate_stops_at_eos():
    model, x = gpt(), torch.randint(0, V, (1, 6), generator=seeded(2))
    free = generate(model, x, 20, temperature=1.0, generator=seeded())[0, 6:].tolist()
    eos = free[4]  # a token the sampler will pick at step 5 (or earlier)
    with_eos = generate(model, x, 20, temperature=1.0, eos_id=eos, generator=seeded())[0, 6:].tolist()
    streamed = list(stream_tokens(model, x, 20, temperature=1.0, stop_ids={eos}, generator=seeded()))
    assert streamed == with_eos[: with_eos.index(eos) + 1] and streamed[-1] == eos and len(streamed) <= 5
    with pytest.raises(ValueError, match="one row"):
        stream_tokens(model, torch.zeros(2, 3, dtype=torch.long), 4)


@pytest.mark.parametrize("opts", [dict(), dict(temperature=1.0, top_k=10), dict(min_new_tokens=3,
                                                                                 no_repeat_ngram_size=2)])
def test_stream_seq2seq_equals_generate_seq2seq(opts):
    torch.manual_seed(0)
    model = EncoderDecoder(EncoderDecoderConfig(vocab_size=V, block_size=24, n_layer=1, n_decoder_layer=1, n_head=2,
                                                n_embd=32, intermediate_size=64)).eval()
    src = torch.randint(3, V, (1, 9), generator=seeded(3))
    eos = 2
    ref = generate_seq2seq(model, src, None, start_id=1, eos_id=eos, pad_id=0, max_new_tokens=30,
                           generator=seeded(), **opts)[0].tolist()
    ref = ref[: ref.index(eos) + 1] if eos in ref else ref
    got = list(stream_seq2seq(model, src, None, start_id=1, stop_ids={eos}, max_new_tokens=30, generator=seeded(),
                              **opts))
    assert got == ref and 3 <= len(got) <= 23  # block_size - 1 caps max_new_tokens


def test_text_stream_prints_whole_characters_and_holds_back_a_stop_string():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from lit_llm.chat import TextStream

    byte_vocab = {ch: i for i, ch in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    tok = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    ids = tok.encode("héllo ☃<|im_end|>").ids  # é: 2 bytes, ☃: 3 bytes, each its own token
    pieces = []
    stream = TextStream(tok, stop_text="<|im_end|>", on_text=pieces.append)
    stopped = [stream.push(i) for i in ids]
    assert "".join(pieces) == "héllo ☃" == stream.text and stopped.count(True) == 1 and stopped[-1]
    assert all("\ufffd" not in p and "<" not in p for p in pieces)
