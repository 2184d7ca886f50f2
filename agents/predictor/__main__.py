"""``python -m blockctl_agents.predictor``: run the predictor agent in front of one engine instance."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from blockctl.engine.profile import DEFAULT_PROFILE, load_profile
from blockctl.errors import BlockctlError
from blockctl.scheduler.drainserver import LEAN, DrainingServer
from blockctl.secrets import read_secret_file
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
    p.add_argument("--engine-api-key-file", help="file holding the API key the engine requires (mode 0600)")
    p.add_argument("--tokenizer", help="local HF tokenizer dir to count prompt tokens (default: tiktoken)")
    p.add_argument("--name", help="instance name reported to the scheduler (default: host:port)")
    p.add_argument("--scrape-interval", type=float, default=0.25, help="seconds between /metrics scrapes")
    p.add_argument("--stall", type=float, default=1.0,
                   help="a /metrics scrape unanswered this many seconds marks the engine sick (default 1)")
    p.add_argument("--drain", type=float, default=5.0,
                   help="after SIGTERM, seconds requests in flight may still run (default 5)")
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a caller may take to upload its request body (default 30)")
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
            engine_api_key=read_secret_file(args.engine_api_key_file, what="engine API key",
                                            key="engine-api-key-file").strip() or None
            if args.engine_api_key_file else None,
            scrape_interval_s=args.scrape_interval,
            tokenizer=args.tokenizer,
            learn=args.learn,
            request_overhead_ms=float(profile.fit.get("request_overhead_ms", 0.0)),
            stall_s=args.stall,
            drain_s=args.drain,
            body_timeout_s=args.body_timeout,
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
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server_config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", **LEAN,
                                   timeout_keep_alive=30, timeout_graceful_shutdown=int(settings.drain_s) + 2)
    DrainingServer(server_config, app.state.begin_drain).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
