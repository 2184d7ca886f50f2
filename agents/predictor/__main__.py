"""``python -m blockctl_agents.predictor``: run the predictor agent in front of one engine instance."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from blockctl.engine.profile import DEFAULT_PROFILE, load_profile
from blockctl.errors import BlockctlError
from blockctl.tokens import get_counter
from blockctl_agents.predictor.app import create_app
from blockctl_agents.predictor.settings import AgentSettings, engine_config_for, read_token


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m blockctl_agents.predictor", description=__doc__)
    p.add_argument("--engine-url", required=True, help="base URL of the engine, e.g. http://127.0.0.1:8000")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="step-time profile name or path")
    p.add_argument("--token-file", help="file holding the bearer token that guards the agent (mode 0600)")
    p.add_argument("--tokenizer", help="local HF tokenizer dir to count prompt tokens (default: tiktoken)")
    p.add_argument("--name", help="instance name reported to the scheduler (default: host:port)")
    p.add_argument("--scrape-interval", type=float, default=0.5, help="seconds between /metrics scrapes")
    p.add_argument(
        "--no-learn", dest="learn", action="store_false",
        help="keep the profile's step-time model (default: learn its coefficients from token timings)",
    )
    g = p.add_argument_group("engine flags (as the engine was started; default: the profile's)")
    for flag in (
        "max-num-seqs",
        "max-num-batched-tokens",
        "num-gpu-blocks-override",
        "block-size",
        "max-model-len",
    ):
        g.add_argument(f"--{flag}", type=int)
    g.add_argument("--gpu-memory-utilization", type=float)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        profile = load_profile(args.profile)
        config = engine_config_for(
            profile,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            num_gpu_blocks_override=args.num_gpu_blocks_override,
            block_size=args.block_size,
            max_model_len=args.max_model_len,
            gpu_memory_utilization=args.gpu_memory_utilization,
        )
        if args.tokenizer:
            get_counter(args.tokenizer)  # load it now: a bad directory is a start-up error, not a 500 later
        settings = AgentSettings(
            engine_url=args.engine_url.rstrip("/"),
            name=args.name or f"{args.host}:{args.port}",
            profile=profile.name,
            engine_config=config,
            token=read_token(args.token_file) if args.token_file else None,
            scrape_interval_s=args.scrape_interval,
            tokenizer=args.tokenizer,
            learn=args.learn,
            request_overhead_ms=float(profile.fit.get("request_overhead_ms", 0.0)),
        )
    except BlockctlError as exc:
        print(f"⨯ {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  try: {exc.hint}", file=sys.stderr)
        return 2
    if settings.token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"! no --token-file: /predict, /state and the OpenAI routes on {args.host} are open to anyone "
            "who can reach this port",
            file=sys.stderr,
        )
    app = create_app(settings, profile.model)
    # keep-alive longer than any client pool keeps idle connections (httpx: 5 s), so no request races a close
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, timeout_keep_alive=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
