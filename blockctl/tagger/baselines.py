"""Baselines a tagger must beat: predict-the-training-median, and a cheap hashed-n-gram ridge model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blockctl.errors import TaggerError
from blockctl.tagger.dataset import Example


@dataclass(frozen=True, slots=True)
class MedianBaseline:
    median: int

    @classmethod
    def fit(cls, train: Sequence[Example]) -> MedianBaseline:
        return cls(max(1, round(float(np.median([e.output_tokens for e in train])))))

    def predict(self, prompts: Sequence[str]) -> list[int]:
        return [self.median] * len(prompts)


class NgramBaseline:
    """Ridge regression on log(1 + tokens) over hashed word 1–2-grams (tf-idf) and log prompt length.

    Needs scikit-learn (part of ``blockctl[tagger]``); trains in seconds on CPU.
    """

    def __init__(self, vectorizer: Any, tfidf: Any, ridge: Any) -> None:
        self._vectorizer, self._tfidf, self._ridge = vectorizer, tfidf, ridge

    @staticmethod
    def _length_features(prompts: Sequence[str]) -> Any:
        from scipy import sparse

        lens = np.array([[math.log1p(len(p)), math.log1p(len(p.split()))] for p in prompts]) / 8.0
        return sparse.csr_matrix(lens)

    def _features(self, prompts: Sequence[str]) -> Any:
        from scipy import sparse

        text = self._tfidf.transform(self._vectorizer.transform(prompts))
        return sparse.hstack([text, self._length_features(prompts)], format="csr")

    @classmethod
    def fit(cls, train: Sequence[Example], *, alpha: float = 1.0) -> NgramBaseline:
        try:
            from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
            from sklearn.linear_model import Ridge
        except ImportError as exc:
            raise TaggerError("the n-gram baseline needs scikit-learn", hint="pip install 'blockctl[tagger]'") from exc
        vectorizer = HashingVectorizer(
            ngram_range=(1, 2), n_features=1 << 18, alternate_sign=False, norm=None, lowercase=True
        )
        prompts = [e.prompt for e in train]
        tfidf = TfidfTransformer(sublinear_tf=True).fit(vectorizer.transform(prompts))
        model = cls(vectorizer, tfidf, Ridge(alpha=alpha, solver="sparse_cg", random_state=0))
        y = np.log1p(np.array([e.output_tokens for e in train], dtype=np.float64))
        model._ridge.fit(model._features(prompts), y)
        return model

    def predict(self, prompts: Sequence[str]) -> list[int]:
        logs = self._ridge.predict(self._features(prompts))
        return [max(1, round(math.expm1(max(0.0, float(v))))) for v in logs]
