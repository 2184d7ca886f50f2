"""``python -m blockctl_agents.emulator`` as a standalone process: start-up delay, serving, graceful SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import free_port


def _wait_listening(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            return httpx.get(f"{url}/health").status_code
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("emulator did not start listening")


@pytest.mark.slow
def test_standalone_process_lifecycle() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockctl_agents.emulator", "--port", str(port), "--max-num-seqs", "4",
         "--startup-delay", "1.0", "--served-model-name", "m1", "m2"],
        stderr=subprocess.PIPE,
    )
    try:
        assert _wait_listening(url, proc) == 503  # listening, engine "starting"
        end = time.monotonic() + 10
        while httpx.get(f"{url}/health").status_code != 200:
            assert time.monotonic() < end
            time.sleep(0.05)
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["m1", "m2"]
        body = {"model": "m2", "prompt": "hi", "max_tokens": 3000, "ignore_eos": True, "stream": True}
        events: list[dict[str, object]] = []
        with httpx.stream("POST", f"{url}/v1/completions", json=body) as resp:
            for line in resp.iter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    break
                events.append(json.loads(line[6:]))
                if len(events) == 3:
                    proc.send_signal(signal.SIGTERM)
        # the stream ended promptly with an "abort" finish, not by a timeout or a dropped connection
        assert events[-1]["choices"][0]["finish_reason"] == "abort"  # type: ignore[index]
        assert events[0]["model"] == "m2"  # the served name the client asked for
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_other_vllm_flags_are_ignored_ours_are_parsed() -> None:
    from blockctl_agents.emulator.__main__ import parse_args

    args, ignored = parse_args(["--port", "9", "--dtype", "float32", "--enforce-eager", "--max-num-seqs", "3"])
    assert args.port == 9 and args.max_num_seqs == 3
    assert ignored == ["--dtype", "float32", "--enforce-eager"]
    with pytest.raises(SystemExit):
        parse_args(["stray"])
