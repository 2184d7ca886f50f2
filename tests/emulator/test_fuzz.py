"""Whatever JSON a client sends to the completion endpoints, the answer is a 200 or an OpenAI 4xx, never a 500."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockctl_agents.emulator.app import create_app
from tests.conftest import serve_app_in_thread

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 8), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                                             inner, max_size=3),
                       max_leaves=6)
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", 3]),
                                  "content": st.one_of(st.text(max_size=20), _values)})
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.one_of(st.just("emulated"), _values),
    "prompt": st.one_of(st.text(max_size=20), st.lists(st.integers(0, 50_000), max_size=8), _values),
    "messages": st.one_of(st.lists(_message, max_size=3), _values),
    "max_tokens": st.one_of(st.integers(-2, 6), _values),
    "max_completion_tokens": st.one_of(st.integers(-2, 6), _values),
    "stream": st.one_of(st.booleans(), _values),
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), _values),
    "n": st.one_of(st.integers(0, 3), _values),
    "ignore_eos": st.one_of(st.booleans(), _values),
    "min_tokens": st.one_of(st.integers(-1, 4), _values),
    "temperature": st.one_of(st.floats(-1, 3), _values),
    "stop": _values,
}
_bodies = st.one_of(
    st.dictionaries(st.sampled_from(sorted(_FIELDS)), st.none(), max_size=8).flatmap(
        lambda keys: st.fixed_dictionaries({k: _FIELDS[k] for k in keys})
    ),
    _values,
)


@pytest.mark.slow
def test_random_bodies_never_500() -> None:
    # max_model_len 12: whatever is accepted finishes within a dozen steps
    with serve_app_in_thread(create_app(max_num_seqs=8, max_model_len=12)) as url, httpx.Client(
        base_url=url, timeout=30
    ) as http:

        @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(body=_bodies, chat=st.booleans())
        def check(body: Any, chat: bool) -> None:
            path = "/v1/chat/completions" if chat else "/v1/completions"
            with http.stream("POST", path, content=json.dumps(body).encode()) as resp:
                status = resp.status_code
                text = resp.read().decode() if status != 200 else ""
            assert status in (200, 400, 404), (status, body)
            if status != 200:
                err = json.loads(text)["error"]
                assert isinstance(err["message"], str) and err["type"], err

        check()
        assert http.get("/health").status_code == 200
