"""Builds a tiny randomly initialised Llama and its word-level tokenizer on disk, for a real vLLM on CPU."""

from __future__ import annotations

import json
from pathlib import Path

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a tiny llama answers every question with random words",
    "load balancing by prediction sends each request where it finishes first",
    "hello world this is a test of the emergency broadcast system",
]


def build_tiny_llama(out: Path, *, max_len: int = 512, hidden: int = 64, intermediate: int = 128,
                     layers: int = 2, heads: int = 4, head_dim: int = 32) -> Path:
    """Save config, random fp32 weights and a HF fast tokenizer to ``out``; returns ``out``.

    head_dim is 32, not hidden/heads = 16: vLLM's CPU attention kernels reject head_dim 16. The default shape
    steps in a few milliseconds on a CPU, too fast to time from a stream on a 2-core host; a wider one
    (``--hidden 1024 --intermediate 2816 --layers 4 --heads 16 --head-dim 64``: ~50 M parameters, ~18 ms
    decode steps on one core) is what the README's real-engine accuracy table uses.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.model_max_length = max_len
    fast.save_pretrained(out)
    vocab = tok.get_vocab_size()
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=head_dim,
        max_position_embeddings=max_len,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    # A chat template so /v1/chat/completions works too.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build a randomly initialised Llama for vLLM on CPU.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--intermediate", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=512)
    a = parser.parse_args()
    print(build_tiny_llama(a.out, max_len=a.max_len, hidden=a.hidden, intermediate=a.intermediate, layers=a.layers,
                           heads=a.heads, head_dim=a.head_dim))
