"""Length-only synthetic workloads with the published (or, where none is published, fitted) parameters.

- ``synthetic-sharegpt``: ShareGPT V3 as vLLM's benchmark filters it, counted with cl100k_base, has 15 510
  pairs: prompt median 106 / mean 219 tokens, reply median 134 / mean 201. (The vLLM paper, Kwon et al.
  SOSP'23 Fig. 11, reports means of 161 input / 338 output tokens on its ShareGPT sample with the OPT
  tokenizer.) Lengths are drawn independently from log-normals and redrawn until they pass vLLM's filter;
  the log-normals' parameters were fitted (Nelder-Mead on 300k draws) so that the *filtered* medians and
  means match: synthetic prompt 109 / 202, reply 135 / 199. Independent draws lose the real data's
  negative prompt/reply correlation and its heavier log-space spread (sd 1.56 / 1.45 real, 1.31 / 0.90 here).
- ``azure-conv`` / ``azure-code``: the Azure LLM inference trace 2023 as characterised by Splitwise (Patel
  et al., ISCA'24, §III): median prompt 1020 tokens and median output 129 for conversation; median prompt
  1500 and median output 13 for coding. Log-normal around those medians; the log-space spreads (sigma)
  are our choice so that the means land near the trace's (conversation ~1155 / ~211, code ~2048 / ~28 —
  sigma = sqrt(2 ln(mean / median))). Prompts are capped at 4000 and outputs at 2000 tokens.
- ``burstgpt``: BurstGPT-Perf's modelled workload (Wang et al. 2024; HPMLL/BurstGPT ``RunConfig``): Zipf
  lengths with a = 1.1, redrawn while >= 1024, for prompt and output; gamma inter-arrival times with shape
  0.5 and scale 2.0 s (1 request/s on average, CV = sqrt(2)), stored as timestamps for ``--arrival trace``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from blockctl.bench.workloads.dataset import keep
from blockctl.bench.workloads.types import WorkItem


@dataclass(frozen=True, slots=True)
class LogNormal:
    mu: float  # mean of ln(tokens)
    sigma: float  # standard deviation of ln(tokens)

    @classmethod
    def from_median_mean(cls, median: float, mean: float) -> LogNormal:
        return cls(math.log(median), math.sqrt(2.0 * math.log(mean / median)))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.rint(rng.lognormal(self.mu, self.sigma, n)).astype(np.int64)


SHAREGPT_PROMPT = LogNormal(4.909, 1.689)  # before vLLM's filter (see the module docstring)
SHAREGPT_OUTPUT = LogNormal(4.907, 0.906)
AZURE_CONV_PROMPT = LogNormal.from_median_mean(1020, 1155)
AZURE_CONV_OUTPUT = LogNormal.from_median_mean(129, 211)
AZURE_CODE_PROMPT = LogNormal.from_median_mean(1500, 2048)
AZURE_CODE_OUTPUT = LogNormal.from_median_mean(13, 28)
AZURE_MAX_PROMPT = 4000
AZURE_MAX_OUTPUT = 2000
BURSTGPT_ZIPF_A = 1.1
BURSTGPT_MAX_TOKENS = 1024  # exclusive
BURSTGPT_GAMMA_SHAPE = 0.5
BURSTGPT_GAMMA_SCALE = 2.0


def synthetic_sharegpt(n: int, seed: int) -> list[WorkItem]:
    rng = np.random.default_rng(seed)
    items: list[WorkItem] = []
    while len(items) < n:
        want = max(16, 2 * (n - len(items)))
        prompts, outputs = SHAREGPT_PROMPT.sample(rng, want), SHAREGPT_OUTPUT.sample(rng, want)
        for p, o in zip(prompts.tolist(), outputs.tolist(), strict=True):
            if keep(p, o) and len(items) < n:
                items.append(WorkItem(prompt=None, prompt_tokens=p, output_tokens=o))
    return items


def _azure(prompt: LogNormal, output: LogNormal) -> Callable[[int, int], list[WorkItem]]:
    def make(n: int, seed: int) -> list[WorkItem]:
        rng = np.random.default_rng(seed)
        ps = np.clip(prompt.sample(rng, n), 1, AZURE_MAX_PROMPT)
        os_ = np.clip(output.sample(rng, n), 1, AZURE_MAX_OUTPUT)
        pairs = zip(ps.tolist(), os_.tolist(), strict=True)
        return [WorkItem(prompt=None, prompt_tokens=p, output_tokens=o) for p, o in pairs]

    return make


def _zipf_below(rng: np.random.Generator, a: float, limit: int, n: int) -> np.ndarray:
    out = rng.zipf(a, n)
    bad = out >= limit
    while bad.any():
        out[bad] = rng.zipf(a, int(bad.sum()))
        bad = out >= limit
    return out


def burstgpt(n: int, seed: int) -> list[WorkItem]:
    rng = np.random.default_rng(seed)
    prompts = _zipf_below(rng, BURSTGPT_ZIPF_A, BURSTGPT_MAX_TOKENS, n)
    outputs = _zipf_below(rng, BURSTGPT_ZIPF_A, BURSTGPT_MAX_TOKENS, n)
    gaps = rng.gamma(BURSTGPT_GAMMA_SHAPE, BURSTGPT_GAMMA_SCALE, n)
    stamps = np.concatenate(([0.0], np.cumsum(gaps[:-1])))
    return [
        WorkItem(prompt=None, prompt_tokens=p, output_tokens=o, timestamp=t)
        for p, o, t in zip(prompts.tolist(), outputs.tolist(), stamps.tolist(), strict=True)
    ]


GENERATORS: dict[str, Callable[[int, int], list[WorkItem]]] = {
    "synthetic-sharegpt": synthetic_sharegpt,
    "azure-conv": _azure(AZURE_CONV_PROMPT, AZURE_CONV_OUTPUT),
    "azure-code": _azure(AZURE_CODE_PROMPT, AZURE_CODE_OUTPUT),
    "burstgpt": burstgpt,
}
