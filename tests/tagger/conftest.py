"""Tagger test fixtures: a tiny randomly initialised BERT encoder with its own word-level tokenizer, and a
synthetic dataset whose lengths a model can learn (they depend on a keyword and on the prompt length)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from blockctl.tagger.dataset import Example

WORDS = [f"w{i}" for i in range(60)] + ["brief", "detailed", "essay", "yes", "list"]


def synthetic_examples(n: int, seed: int = 0) -> list[Example]:
    """'brief' prompts get ~20 tokens, 'detailed' ones ~400, others ~120 (plus noise)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.choice(["brief", "detailed", "plain"])
        words = [rng.choice(WORDS[:60]) for _ in range(rng.randint(3, 12))]
        if kind != "plain":
            words.insert(rng.randrange(len(words)), kind)
        base = {"brief": 20, "detailed": 400, "plain": 120}[kind]
        out.append(Example(f"{' '.join(words)} #{i}", max(1, int(base * rng.uniform(0.8, 1.25)))))
    return out


def write_jsonl(path: Path, examples: list[Example]) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": e.prompt, "output_tokens": e.output_tokens}) + "\n" for e in examples)
    )
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and a word-level WordPiece tokenizer, saved like a HF dir."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "#", *[str(d) for d in range(10)]]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(root))
    tokenizer.save_pretrained(str(root))
    return root


@pytest.fixture(scope="session")
def synthetic_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "lengths.jsonl", synthetic_examples(400))


@pytest.fixture(scope="session")
def tiny_tagger(tiny_base: Path, synthetic_jsonl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tagger trained in a few seconds on the synthetic data (every layer fine-tuned)."""
    from blockctl.tagger.train import TrainSpec, train

    out = tmp_path_factory.mktemp("tagger") / "tiny"
    spec = TrainSpec(
        source=str(synthetic_jsonl),
        base=str(tiny_base),
        max_length=24,
        epochs=6,
        batch_size=16,
        lr=5e-3,
        head_lr=1e-2,
        train_layers=2,
        num_layers=2,  # both of the tiny base's layers: the lean forward is checked across layers
        max_train=None,
        max_val=None,
        patience=3,
        evals_per_epoch=1,
    )
    train(spec, out)
    return out
