"""``python -m blockctl_agents.profiler``: profile on this host and write the profile document (used over SSH)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from blockctl.errors import BlockctlError
from blockctl_agents.profiler.run import Options, run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m blockctl_agents.profiler", description=__doc__)
    parser.add_argument("--out", required=True, help="Where to write the profile JSON.")
    for f in dataclasses.fields(Options):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action="store_true")
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            required = f.default is dataclasses.MISSING
            parser.add_argument(flag, type=kind, required=required, default=None if required else f.default)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    out = Path(args.pop("out"))
    try:
        cfg = Options(**args).to_config()
        doc = run(cfg, lambda done, total: print(f"step {done}/{total}", file=sys.stderr, flush=True))
    except BlockctlError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
