"""Predicted output lengths for simulated requests: ``oracle``, ``noisy:PCT``, ``fixed:N``, ``tagger:DIR`` or
``synthetic:TAU``."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from blockctl.errors import ConfigError
from blockctl.predict.lengths import LengthDist

KINDS = ("oracle", "noisy", "fixed", "tagger", "synthetic")


@dataclass(frozen=True, slots=True)
class LengthSpec:
    """A parsed ``--lengths`` value.

    ``noisy:PCT``: predicted = round(true × (1 + u)), u ~ Uniform(−PCT/100, +PCT/100), at least 1 — an
    unbiased error whose magnitude never exceeds PCT % (mean |error| = PCT/2 %). ``fixed:N``: N tokens for
    every request, the baseline a length predictor has to beat. ``tagger:DIR``: the length tagger trained
    into DIR predicts from the prompt text (cached per prompt on disk). ``synthetic:TAU``: a predictor whose
    answers rank the true lengths at Kendall τ = TAU, calibrated like a tagger (``blockctl.bench.sim.synthetic``).
    """

    kind: str
    pct: float = 0.0
    tagger_dir: str | None = None
    tokens: int = 0  # fixed:N
    tau: float = 0.0  # synthetic:TAU

    def __str__(self) -> str:
        if self.kind == "noisy":
            return f"noisy:{self.pct:g}"
        if self.kind == "fixed":
            return f"fixed:{self.tokens}"
        if self.kind == "synthetic":
            return f"synthetic:{self.tau:g}"
        if self.kind == "tagger" and self.tagger_dir:
            return f"tagger:{self.tagger_dir}"
        return self.kind


def parse_lengths(spec: str) -> LengthSpec:
    """Parse ``oracle``, ``noisy:PCT`` (0 ≤ PCT ≤ 100), ``fixed:N`` (N ≥ 1), ``tagger:DIR`` or ``synthetic:TAU``
    (0 < TAU ≤ 1).

    ConfigError names the option.
    """
    kind, _, arg = spec.strip().partition(":")
    if kind == "oracle" and not arg:
        return LengthSpec("oracle")
    if kind == "noisy":
        try:
            pct = float(arg)
        except ValueError:
            raise ConfigError(f"'{spec}': expected noisy:PCT with PCT a number", key="--lengths") from None
        if not 0.0 <= pct <= 100.0:
            raise ConfigError(f"'{spec}': PCT must be between 0 and 100", key="--lengths")
        return LengthSpec("noisy", pct=pct)
    if kind == "fixed":
        if not arg.isdigit() or int(arg) < 1:
            raise ConfigError(f"'{spec}': expected fixed:N with N a whole number of tokens, at least 1",
                              key="--lengths")
        return LengthSpec("fixed", tokens=int(arg))
    if kind == "tagger":
        return LengthSpec("tagger", tagger_dir=arg or None)  # no DIR: refused when lengths are asked for
    if kind == "synthetic":
        try:
            tau = float(arg)
        except ValueError:
            raise ConfigError(f"'{spec}': expected synthetic:TAU with TAU a Kendall tau", key="--lengths") from None
        if not 0.0 < tau <= 1.0:
            raise ConfigError(f"'{spec}': TAU must be above 0 and at most 1", key="--lengths")
        return LengthSpec("synthetic", tau=tau)
    raise ConfigError(f"'{spec}': expected one of oracle, noisy:PCT, fixed:N, tagger:DIR, synthetic:TAU",
                      key="--lengths")


def held_out_workload(workload: str, spec: LengthSpec) -> tuple[str, str | None]:
    """The workload a run with ``spec`` lengths may use, and a note when it differs from ``workload``.

    A tagger is evaluated only on prompts it never trained or calibrated on: with ``tagger:DIR``, ShareGPT
    (what ``blockctl train-tagger`` trains on by default) becomes its held-out ``sharegpt:test`` split, and
    ``sharegpt-multiturn`` the conversations of that split (``sharegpt-multiturn:test``: the tagger's
    reply-history table was fitted on the train split's); the train or val split is refused. Other workloads
    (another dataset) are used as given.
    """
    if spec.kind != "tagger":
        return workload, None
    if workload in ("sharegpt", "sharegpt-multiturn"):
        return f"{workload}:test", (f"tagger lengths: the workload is ShareGPT's held-out test split "
                                    f"({workload}:test)")
    if workload in ("sharegpt:train", "sharegpt:val", "sharegpt-multiturn:train", "sharegpt-multiturn:val"):
        raise ConfigError(f"'{workload}': a tagger is evaluated only on prompts it never trained or "
                          "calibrated on", key="--workload", hint=f"--workload {workload.partition(':')[0]}:test")
    return workload, None


def noisy_lengths(true_lengths: Sequence[int], pct: float, *, seed: int) -> list[int]:
    """Each true length times a uniform relative error in ±pct %, rounded, ≥ 1; same seed, same list."""
    rng = random.Random(seed)
    frac = pct / 100.0
    return [max(1, round(n * (1.0 + rng.uniform(-frac, frac)))) for n in true_lengths]


def predicted_lengths(
    spec: LengthSpec, true_lengths: Sequence[int], prompts: Sequence[str | None], *, seed: int,
    histories: Sequence[Sequence[int]] = (),
) -> list[int]:
    """The output length the predictor is told for each request (the engine still runs the true one).

    ``histories``: each request's earlier reply lengths (multi-turn workloads); with ``tagger:DIR`` a request
    that has some is told what the tagger's reply-history table says (``blockctl.predict.history``), as the
    scheduler does for a chat with earlier assistant messages."""
    if spec.kind == "oracle":
        return [max(1, n) for n in true_lengths]
    if spec.kind == "noisy":
        return noisy_lengths(true_lengths, spec.pct, seed=seed)
    if spec.kind == "fixed":
        return [spec.tokens] * len(true_lengths)
    if spec.kind == "synthetic":
        from blockctl.bench.sim.synthetic import synthetic_predictions

        return synthetic_predictions(true_lengths, spec.tau, seed=seed)[0]
    told = _tagger_lengths(spec.tagger_dir, prompts)
    by_history = _history_dists(spec, histories)
    return told if by_history is None else [n if d is None else round(d.mean) for n, d in zip(told, by_history,
                                                                                          strict=True)]


def _history_dists(spec: LengthSpec, histories: Sequence[Sequence[int]]) -> list[LengthDist | None] | None:
    """Per request, the tagger's reply-history distribution where the request has earlier replies; None when
    no request has any or the tagger has no table."""
    if spec.kind != "tagger" or spec.tagger_dir is None or not any(histories):
        return None
    from blockctl.predict.history import ReplyHistory
    from blockctl.tagger.config import read_config

    table = ReplyHistory.from_dict(read_config(spec.tagger_dir).history)
    return None if table is None else [table.dist(h) for h in histories]


def _tagger_lengths(tagger_dir: str | None, prompts: Sequence[str | None]) -> list[int]:
    if tagger_dir is None:
        raise ConfigError("'tagger' needs the trained tagger's directory: tagger:DIR", key="--lengths",
                          hint="blockctl train-tagger --data sharegpt --out DIR")
    texts = [p for p in prompts if p is not None]
    if len(texts) != len(prompts):
        raise ConfigError(
            "the workload has no prompt text (lengths only), so a tagger cannot predict from it",
            key="--lengths",
            hint="use --lengths noisy:50 or a text workload such as --workload sharegpt",
        )
    from blockctl.tagger.cache import predict_lengths  # cached on disk; loads torch only on a cache miss

    return [max(1, n) for n in predict_lengths(tagger_dir, texts)]


def predicted_dists(
    spec: LengthSpec, predicted: Sequence[int], prompts: Sequence[str | None], *,
    true_lengths: Sequence[int] = (), seed: int = 0, histories: Sequence[Sequence[int]] = (),
) -> list[LengthDist | None] | None:
    """Each request's predicted length as a distribution, where the predictor gives one (None: exactly the
    predicted number, as ``oracle`` and ``noisy:PCT`` say).

    ``fixed:N`` says only "about N tokens": the prior (``blockctl.predict.lengths.prior``), ShareGPT's length
    distribution scaled to mean N. ``tagger:DIR``: the calibrated distribution of the tagger's bin (true
    lengths of validation prompts tagged alike), or the prior around its prediction without one.
    ``synthetic:TAU``: its bin's atoms (``true_lengths`` and ``seed`` as given to :func:`predicted_lengths`).
    A request with earlier replies (``histories``) gets the tagger's reply-history distribution, as there.
    """
    from blockctl.predict.lengths import dist, prior

    if spec.kind == "fixed":
        return [prior(spec.tokens)] * len(predicted)
    if spec.kind == "synthetic":
        from blockctl.bench.sim.synthetic import synthetic_predictions

        return list(synthetic_predictions(true_lengths, spec.tau, seed=seed)[1])
    if spec.kind != "tagger" or spec.tagger_dir is None:
        return None
    from blockctl.tagger.cache import predict_raw
    from blockctl.tagger.calibration import Calibration
    from blockctl.tagger.config import read_config

    calibration = Calibration.from_dict(read_config(spec.tagger_dir).calibration)
    raw = predict_raw(spec.tagger_dir, [p for p in prompts if p is not None])
    out: list[LengthDist | None] = []
    for n, mean in zip(raw, predicted, strict=True):
        atoms = None if calibration is None else calibration.atoms(n)
        out.append(prior(mean) if atoms is None else dist(atoms))
    by_history = _history_dists(spec, histories)
    return out if by_history is None else [d if h is None else h for d, h in zip(out, by_history, strict=True)]
