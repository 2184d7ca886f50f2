"""One engine step of a decoder with a given shape, in torch, with random weights.

The step mirrors what a vLLM step computes: every token of the step (the prefill chunk and one token per decode
sequence) goes through the linear layers together; attention is torch SDPA — the prefill chunk attends to its
cached prefix plus itself (causal), each decode sequence attends to its own context; the LM head runs on the rows
that sample (the chunk's last token and every decode sequence). The KV cache is one layer's worth of buffers,
read by every layer: the bytes each layer moves are those of a real cache, without 32× the memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blockctl_agents.profiler.grid import GridPoint
from blockctl_agents.profiler.shape import ShardDims

TORCH_DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


@dataclass
class _Layer:
    qkv: Any
    o: Any
    gate_up: Any
    down: Any
    norm1: Any
    norm2: Any


class StepModel:
    """Random weights of one GPU's ``shape`` on ``device``; ``inputs(point)`` then ``forward(inputs)`` runs one step."""

    def __init__(self, shape: ShardDims, device: str, *, seed: int = 0, share_layer_weights: bool = False) -> None:
        import torch

        self.torch = torch
        self.shape = shape
        self.device = torch.device(device)
        self.dtype = getattr(torch, TORCH_DTYPES[shape.dtype])
        gen = torch.Generator(device="cpu").manual_seed(seed)
        s = shape
        qkv_out = (s.heads + 2 * s.kv_heads) * s.head_dim

        def w(rows: int, cols: int) -> Any:
            # Scaled so activations stay finite through many layers (values are irrelevant to timing).
            t = torch.randn(rows, cols, generator=gen, dtype=torch.float32) / rows**0.5
            return t.to(device=self.device, dtype=self.dtype)

        def layer() -> _Layer:
            return _Layer(
                qkv=w(s.hidden, qkv_out),
                o=w(s.heads * s.head_dim, s.hidden),
                gate_up=w(s.hidden, 2 * s.mlp),
                down=w(s.mlp, s.hidden),
                norm1=torch.ones(s.hidden, device=self.device, dtype=self.dtype),
                norm2=torch.ones(s.hidden, device=self.device, dtype=self.dtype),
            )

        first = layer()
        self.layers = [first if share_layer_weights and i else layer() for i in range(s.layers)] or [first]
        self.final_norm = torch.ones(s.hidden, device=self.device, dtype=self.dtype)
        self.lm_head = w(s.hidden, s.vocab)

    def inputs(self, point: GridPoint) -> dict[str, Any]:
        """Static tensors for one step (allocated outside any CUDA graph capture)."""
        torch, s = self.torch, self.shape
        p, c, b, d = point.prefill_tokens, point.prefill_cached, point.decode_batch, point.decode_context
        tokens = p + b
        x = torch.randn(tokens, s.hidden, device=self.device, dtype=self.dtype) * 0.1
        out: dict[str, Any] = {"x": x, "point": point}
        if p:
            out["k_cached"] = torch.randn(1, s.kv_heads, c, s.head_dim, device=self.device, dtype=self.dtype)
            out["v_cached"] = torch.randn_like(out["k_cached"])
            # Bottom-right aligned causal mask: query i sees the c cached keys and new keys 0..i.
            q_pos = torch.arange(p, device=self.device).unsqueeze(1) + c
            k_pos = torch.arange(c + p, device=self.device).unsqueeze(0)
            out["mask"] = k_pos <= q_pos if c else None
        if b:
            out["k_dec"] = torch.randn(b, s.kv_heads, d, s.head_dim, device=self.device, dtype=self.dtype)
            out["v_dec"] = torch.randn_like(out["k_dec"])
        sample = ([p - 1] if p else []) + list(range(p, p + b))
        out["sample_rows"] = torch.tensor(sample, device=self.device, dtype=torch.long)
        return out

    def forward(self, inp: dict[str, Any]) -> Any:
        torch, s = self.torch, self.shape
        functional = torch.nn.functional
        point: GridPoint = inp["point"]
        p, b = point.prefill_tokens, point.decode_batch
        x = inp["x"]
        hd, nh, nkv = s.head_dim, s.heads, s.kv_heads
        for lay in self.layers:
            h = functional.rms_norm(x, (s.hidden,), lay.norm1)
            qkv = h @ lay.qkv
            q, k, v = qkv.split([nh * hd, nkv * hd, nkv * hd], dim=-1)
            parts = []
            if p:
                qp = q[:p].view(p, nh, hd).transpose(0, 1).unsqueeze(0)
                kp = torch.cat([inp["k_cached"], k[:p].view(p, nkv, hd).transpose(0, 1).unsqueeze(0)], dim=2)
                vp = torch.cat([inp["v_cached"], v[:p].view(p, nkv, hd).transpose(0, 1).unsqueeze(0)], dim=2)
                mask = inp["mask"]
                ap = functional.scaled_dot_product_attention(
                    qp, kp, vp, attn_mask=mask, is_causal=mask is None, enable_gqa=nkv != nh
                )
                parts.append(ap.squeeze(0).transpose(0, 1).reshape(p, nh * hd))
            if b:
                qd = q[p:].view(b, nh, 1, hd)
                ad = functional.scaled_dot_product_attention(qd, inp["k_dec"], inp["v_dec"], enable_gqa=nkv != nh)
                parts.append(ad.reshape(b, nh * hd))
            attn = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
            x = x + attn @ lay.o
            h = functional.rms_norm(x, (s.hidden,), lay.norm2)
            gate, up = (h @ lay.gate_up).chunk(2, dim=-1)
            x = x + (functional.silu(gate) * up) @ lay.down
        last = functional.rms_norm(x.index_select(0, inp["sample_rows"]), (s.hidden,), self.final_norm)
        return (last @ self.lm_head).argmax(dim=-1)
