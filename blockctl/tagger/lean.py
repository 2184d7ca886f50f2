"""A lean forward pass for taggers on a BERT-family encoder (MiniLM included), for online tagging.

The Hugging Face module spends a few milliseconds per call in Python (module dispatch, mask helpers,
output dataclasses) around about 4 ms of matrix products on this CPU; online tagging pays that on every
request. ``lean_forward`` does the same arithmetic with the same weights in a dozen torch calls per
layer, with Q, K and V fused into one product. It is used only after ``verified`` has checked it
against the module on probe prompts; any other encoder, or any disagreement, keeps the module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blockctl.tagger._deps import torch

Forward = Callable[..., Any]  # (input_ids=, attention_mask=, log_prompt_chars=) -> log(1 + tokens)

PROBES = ("Hi", "Write a haiku about the sea.", "Explain, step by step and with examples, " * 12)
TOLERANCE = 1e-4  # on log(1 + tokens): far below one token anywhere in the range


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: Any
    qkv_b: Any
    out_w: Any
    out_b: Any
    ln1: tuple[Any, Any]
    up_w: Any
    up_b: Any
    down_w: Any
    down_b: Any
    ln2: tuple[Any, Any]


def _supported(config: Any) -> bool:
    return (
        getattr(config, "model_type", None) == "bert"
        and getattr(config, "hidden_act", None) == "gelu"
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and not getattr(config, "is_decoder", False)
    )


def lean_forward(model: Any) -> Forward | None:
    """A function computing ``model``'s output, or None when its encoder is not a plain BERT encoder."""
    encoder = model.encoder
    config = encoder.config
    if not _supported(config):
        return None
    F = torch.nn.functional
    width, heads, eps = int(config.hidden_size), int(config.num_attention_heads), float(config.layer_norm_eps)
    emb = encoder.embeddings
    words, positions = emb.word_embeddings.weight.detach(), emb.position_embeddings.weight.detach()
    segment = emb.token_type_embeddings.weight[0].detach()  # one segment: token type 0 throughout
    emb_ln = (emb.LayerNorm.weight.detach(), emb.LayerNorm.bias.detach())
    layers = []
    for block in encoder.encoder.layer:
        att = block.attention
        q, k, v = att.self.query, att.self.key, att.self.value
        layers.append(
            _Layer(
                qkv_w=torch.cat([q.weight, k.weight, v.weight]).detach(),
                qkv_b=torch.cat([q.bias, k.bias, v.bias]).detach(),
                out_w=att.output.dense.weight.detach(),
                out_b=att.output.dense.bias.detach(),
                ln1=(att.output.LayerNorm.weight.detach(), att.output.LayerNorm.bias.detach()),
                up_w=block.intermediate.dense.weight.detach(),
                up_b=block.intermediate.dense.bias.detach(),
                down_w=block.output.dense.weight.detach(),
                down_b=block.output.dense.bias.detach(),
                ln2=(block.output.LayerNorm.weight.detach(), block.output.LayerNorm.bias.detach()),
            )
        )
    head = model.head

    def forward(input_ids: Any, attention_mask: Any, log_prompt_chars: Any) -> Any:
        batch, seq = input_ids.shape
        x = F.embedding(input_ids, words) + positions[:seq] + segment
        x = F.layer_norm(x, (width,), *emb_ln, eps)
        bias = torch.zeros(batch, 1, 1, seq, dtype=x.dtype).masked_fill_(attention_mask[:, None, None, :] == 0, -1e30)
        for layer in layers:
            qkv = F.linear(x, layer.qkv_w, layer.qkv_b).view(batch, seq, 3, heads, width // heads)
            qkv = qkv.permute(2, 0, 3, 1, 4)  # (q|k|v, batch, head, position, channel)
            att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
            att = att.transpose(1, 2).reshape(batch, seq, width)
            x = F.layer_norm(F.linear(att, layer.out_w, layer.out_b) + x, (width,), *layer.ln1, eps)
            up = F.gelu(F.linear(x, layer.up_w, layer.up_b))
            x = F.layer_norm(F.linear(up, layer.down_w, layer.down_b) + x, (width,), *layer.ln2, eps)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return head(torch.cat([pooled, (log_prompt_chars / 8.0).unsqueeze(-1)], dim=-1)).squeeze(-1)

    return forward


def verified(model: Any, tokenizer: Any, max_length: int) -> tuple[Forward, str]:
    """The lean forward when it matches the module on padded probe batches, else the module; and which."""
    from blockctl.tagger.predict import encode

    lean = lean_forward(model)
    if lean is None:
        return model, "module"
    with torch.inference_mode():
        for prompts in (list(PROBES), [PROBES[1]]):
            inputs = encode(tokenizer, prompts, max_length)
            want, got = model(**inputs), lean(**inputs)
            if got.shape != want.shape or float((got - want).abs().max()) > TOLERANCE:
                return model, "module"
    return lean, "lean"
