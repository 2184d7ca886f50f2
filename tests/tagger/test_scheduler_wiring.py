"""The real OnlineTagger behind the scheduler daemon's ``--tagger`` seam, over loopback HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx

from blockctl.cluster.state import ensure_token
from blockctl.predict.lengths import dist, format_atoms
from blockctl.scheduler.app import SchedulerSettings, create_app
from blockctl.tagger.online import OnlineTagger
from blockctl.tagger.predict import Tagger
from tests.conftest import serve_app
from tests.scheduler.fakes import FakeAgent, write_cluster


async def test_scheduler_routes_with_the_tagger_length(tmp_path: Path, tiny_tagger: Path) -> None:
    prompts = ["detailed w1 w2 essay", "brief w3"]
    expected = Tagger(tiny_tagger).predict(prompts)
    agent = FakeAgent("a")
    agent.token = ensure_token(tmp_path)
    tagger = OnlineTagger(tiny_tagger, deadline_ms=30_000)  # generous on a loaded CI machine
    async with serve_app(agent.app()) as agent_url:
        write_cluster(tmp_path, {"a": agent_url})
        app = create_app(SchedulerSettings(state_dir=tmp_path, seed=0), tagger=tagger)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
            got = []
            for prompt in prompts:
                r = await http.post("/v1/completions", json={"model": "m", "prompt": prompt, "max_tokens": 4000})
                assert r.status_code == 200, r.text
                got.append(int(r.headers["x-blockctl-predicted-output-tokens"]))
    assert got == expected
    assert tagger.stats.answered == 2 and agent.predicts[0]["predicted_output_tokens"] == expected[0]
    # the agents get the calibrated distribution of each prompt's bin, not a prior around its mean
    offline = Tagger(tiny_tagger)
    assert offline.calibration is not None
    bins = [offline.calibration.atoms(raw) for raw in offline.predict(prompts, calibrated=False)]
    sent = [h["x-blockctl-predicted-output-quantiles"] for h in agent.forwarded]
    assert sent == [format_atoms(dist(atoms)) for atoms in bins if atoms is not None]
