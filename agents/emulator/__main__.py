"""``python -m blockctl_agents.emulator``: serve one emulated vLLM instance (flags mirror ``vllm serve``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Sequence

import uvicorn

from blockctl.engine.profile import DEFAULT_PROFILE
from blockctl.errors import BlockctlError
from blockctl_agents.emulator.app import create_app
from blockctl_agents.emulator.config import EmulatorSettings
from blockctl_agents.emulator.state import Emulator


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Known flags, and the other ``vllm serve`` flags (``--dtype``...), which the emulator ignores."""
    p = argparse.ArgumentParser(prog="python -m blockctl_agents.emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="profile name (e.g. h100/llama-2-7b) or file")
    p.add_argument("--served-model-name", nargs="+", default=["emulated"])
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--max-num-batched-tokens", type=int)
    p.add_argument("--num-gpu-blocks-override", type=int)
    p.add_argument("--block-size", type=int)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--startup-delay", type=float, default=0.0, help="seconds before /health turns 200")
    p.add_argument("--tokenizer", help="local HF tokenizer directory (default: tiktoken cl100k_base)")
    p.add_argument("--noise", type=float, help="relative step-time noise (default: the profile's spread)")
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True,
                   help="vLLM's automatic prefix caching (default: on, as vLLM V1)")
    p.add_argument("--reply-lengths", help="reply-length table (blockctl bench reply-lengths): the workload's "
                   "own reply length for each of its prompts")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"),
                   help="require this key on /v1 routes, as vLLM does (default: $VLLM_API_KEY)")
    args, unknown = p.parse_known_args(argv)
    if unknown and not unknown[0].startswith("--"):
        p.error(f"unexpected argument: {unknown[0]}")
    return args, unknown


class _Server(uvicorn.Server):
    """On shutdown, first end every request in flight, so open streams close at once (uvicorn then only
    waits for connections that are already finishing)."""

    def __init__(self, config: uvicorn.Config, emulator: Emulator) -> None:
        super().__init__(config)
        self.emulator = emulator

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.emulator.begin_shutdown()
        await super().shutdown(sockets)


def main(argv: Sequence[str] | None = None) -> int:
    args, ignored = parse_args(argv)
    if ignored:
        print(f"emulator: ignoring flags it does not model: {' '.join(ignored)}", file=sys.stderr)
    try:
        settings = EmulatorSettings(
            profile=args.profile, served_model_name=tuple(args.served_model_name),
            max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
            num_gpu_blocks_override=args.num_gpu_blocks_override, block_size=args.block_size,
            max_model_len=args.max_model_len, seed=args.seed, startup_delay=args.startup_delay,
            tokenizer=args.tokenizer, noise=args.noise, enable_prefix_caching=args.enable_prefix_caching,
            api_key=args.api_key or None, reply_lengths=args.reply_lengths,
        )
        app = create_app(settings)
        if args.reply_lengths:
            table = app.state.emulator.reply_lengths
            print(f"emulator: reply lengths of {len(table)} prompts from {args.reply_lengths}", file=sys.stderr)
    except BlockctlError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, ws="none",
                            lifespan="on", timeout_graceful_shutdown=5)
    server = _Server(config, app.state.emulator)
    asyncio.run(server.serve())
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
