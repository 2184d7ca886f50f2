"""Run one scheduler daemon: ``python -m blockctl.scheduler --state-dir DIR --port P --policy NAME``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from blockctl.errors import BlockctlError, ConfigError
from blockctl.scheduler import lengths
from blockctl.scheduler.app import Scheduler, SchedulerSettings
from blockctl.scheduler.drainserver import LEAN, DrainingServer
from blockctl.scheduler.policies import POLICIES
from blockctl.scheduler.proxy import Deadlines
from blockctl.scheduler.reqlog import RequestLogSettings
from blockctl.secrets import read_secret_file


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m blockctl.scheduler", description=__doc__)
    p.add_argument("--state-dir", required=True, type=Path, help="cluster state dir (cluster.json, token)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--policy", default="block", choices=sorted(POLICIES))
    p.add_argument("--k", type=int, default=None, help="instances sampled per request (block-pok)")
    p.add_argument("--tagger", default=None, help="length tagger directory")
    p.add_argument("--tokenizer", default=None, help="local HF tokenizer dir (default: tiktoken cl100k)")
    p.add_argument("--predict-timeout-ms", type=float, default=100.0,
                   help="deadline for the agents' /predict answers (default 100)")
    p.add_argument("--default-output-tokens", type=int, default=lengths.DEFAULT_OUTPUT_TOKENS,
                   help="predicted output length when neither the client nor a tagger says")
    p.add_argument("--max-retries", type=int, default=2,
                   help="further instances tried, only for a request that provably did not run (default 2)")
    d = Deadlines()
    p.add_argument("--first-byte-floor", type=float, default=d.first_byte_floor_s,
                   help=f"seconds a forwarded request may wait for its first byte at least (default "
                        f"{d.first_byte_floor_s:g}; more when the instance predicts more)")
    p.add_argument("--first-byte-factor", type=float, default=d.first_byte_factor,
                   help=f"first-byte deadline = max(floor, this × predicted TTFT, or E2E when not streamed) "
                        f"(default {d.first_byte_factor:g})")
    p.add_argument("--idle-timeout", type=float, default=d.idle_s,
                   help=f"longest gap between streamed chunks, seconds (default {d.idle_s:g})")
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a client may take to upload its request body (default 30)")
    p.add_argument("--drain", type=float, default=5.0,
                   help="after SIGTERM, seconds requests in flight may still run (default 5)")
    p.add_argument("--api-key", action="append", default=[],
                   help="deprecated (visible in `ps`): use --api-key-file; accepted client API key (repeatable)")
    p.add_argument("--api-key-file", type=Path, default=None,
                   help="file with accepted API keys, one a line (mode 0600: refused if others can read it)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--request-log", type=Path, default=None,
                   help="request log file, one JSON line per answered request "
                        "(default: STATE_DIR/logs/requests.jsonl)")
    p.add_argument("--no-request-log", action="store_true", help="write no request log")
    p.add_argument("--request-log-max-mb", type=float, default=64.0, help="rotate past this size (default 64)")
    p.add_argument("--request-log-backups", type=int, default=5, help="rotated files kept (default 5)")
    p.add_argument("--log-prompts", action="store_true",
                   help="write prompt text to the request log (for retraining the tagger; off: hash only)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def _api_keys(keys: list[str], path: Path | None) -> frozenset[str]:
    found = {k.strip() for k in keys if k.strip()}
    if keys:
        logging.getLogger("blockctl.scheduler").warning(
            "--api-key is deprecated: every user of this host can read it in `ps`; put the keys in a file "
            "(chmod 600) and pass --api-key-file")
    if path is not None:
        text = read_secret_file(path, what="API key", key="api-key-file")
        found |= {line.strip() for line in text.splitlines() if line.strip()}
    return frozenset(found)


def _request_log(args: argparse.Namespace) -> RequestLogSettings | None:
    if args.no_request_log:
        return None
    if args.request_log_max_mb <= 0 or args.request_log_backups < 0:
        raise ConfigError("needs --request-log-max-mb > 0 and --request-log-backups >= 0", key="request-log")
    path = args.request_log or args.state_dir / "logs" / "requests.jsonl"
    return RequestLogSettings(path=path, max_bytes=max(1, int(args.request_log_max_mb * (1 << 20))),
                              backups=args.request_log_backups, include_prompt=args.log_prompts)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO
    try:
        settings = SchedulerSettings(
            state_dir=args.state_dir, policy=args.policy, k=args.k,
            predict_timeout_s=args.predict_timeout_ms / 1000.0,
            api_keys=_api_keys(args.api_key, args.api_key_file),
            default_output_tokens=args.default_output_tokens, max_retries=args.max_retries,
            tokenizer_dir=args.tokenizer, seed=args.seed, request_log=_request_log(args),
            deadlines=Deadlines(first_byte_floor_s=args.first_byte_floor, first_byte_factor=args.first_byte_factor,
                                idle_s=args.idle_timeout),
            body_timeout_s=args.body_timeout, drain_s=args.drain,
        )
        tagger = lengths.load_tagger(args.tagger) if args.tagger else None
        scheduler = Scheduler(settings, tagger=tagger)
    except BlockctlError as exc:
        print(f"blockctl scheduler: {exc.message}", file=sys.stderr)
        return 2
    config = uvicorn.Config(scheduler.app, host=args.host, port=args.port, **LEAN,
                            log_level=args.log_level, timeout_keep_alive=75,
                            timeout_graceful_shutdown=int(settings.drain_s) + 2)
    DrainingServer(config, scheduler.begin_drain).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
