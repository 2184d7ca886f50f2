"""Prometheus exposition through ``prometheus_client``, built at scrape time from counters the servers keep.

The emulator, the agent and the scheduler count in plain ints and floats on their hot paths (no lock per
token, as ``prometheus_client.Counter.inc`` would take) and turn that state into metric families only when
``/metrics`` is scraped: the library's custom-collector pattern. ``prometheus_client`` then writes the text
format (names, ``_total`` suffixes of counters, label escaping, float formatting), exactly as vLLM's own
server, which uses the same library, writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

__all__ = ["CONTENT_TYPE", "Families", "Metric"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _go(value: float) -> str:
    """A float as the text format writes it (``1.0``, ``+Inf``, ``NaN``, ``1.5e+06``)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


class Families:
    """The metric families of one scrape, in the order they are added; ``render`` writes them as text."""

    __slots__ = ("_families",)

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def _family(self, kind: str, name: str, doc: str) -> Metric:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = Metric(name, doc, kind)
        return family

    def gauge(self, name: str, doc: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        self._family("gauge", name, doc).add_sample(name, dict(labels or {}), float(value))

    def counter(self, name: str, doc: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """A counter ``name`` (without ``_total``); its sample is ``name_total``, as the library writes it."""
        self._family("counter", name, doc).add_sample(f"{name}_total", dict(labels or {}), float(value))

    def declare(self, kind: str, name: str, doc: str) -> None:
        """A family with no sample yet (it is still listed, with HELP and TYPE)."""
        self._family(kind, name, doc)

    def histogram(self, name: str, doc: str, bounds: Sequence[float], counts: Sequence[int], total: float,
                  labels: Mapping[str, str] | None = None) -> None:
        """``counts`` per bucket, not cumulative, the last one for ``+Inf``; ``bounds`` the upper edges."""
        family, base = self._family("histogram", name, doc), dict(labels or {})
        cum = 0
        for bound, count in zip([*map(_go, bounds), "+Inf"], counts, strict=True):
            cum += count
            family.add_sample(f"{name}_bucket", {**base, "le": bound}, float(cum))
        family.add_sample(f"{name}_count", base, float(cum))
        family.add_sample(f"{name}_sum", base, float(total))

    def summary(self, name: str, doc: str, quantiles: Iterable[tuple[float, float]], count: int, total: float,
                labels: Mapping[str, str] | None = None) -> None:
        family, base = self._family("summary", name, doc), dict(labels or {})
        for q, v in quantiles:
            family.add_sample(name, {**base, "quantile": _go(q)}, float(v))
        family.add_sample(f"{name}_sum", base, float(total))
        family.add_sample(f"{name}_count", base, float(count))

    def collect(self) -> Iterable[Metric]:
        return self._families.values()

    def render(self) -> str:
        return generate_latest(self).decode()  # type: ignore[arg-type]  # any object with collect()
