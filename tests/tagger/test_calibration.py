"""Calibration maps a tagger's typical length to the mean length of prompts tagged like it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from blockctl.errors import TaggerError
from blockctl.tagger import calibration


def test_bins_map_to_the_mean_of_their_true_lengths() -> None:
    # tagged 10: truly 10 or 90 (mean 50); tagged 100: 100 or 300 (mean 200); tagged 400: 400
    predicted = [10, 10, 100, 100, 400, 400]
    actual = [10, 90, 100, 300, 400, 400]
    calib = calibration.fit(predicted, actual, bins=3)
    assert calib.edges == (10, 100)
    assert calib.means == (50.0, 200.0, 400.0)
    assert [calib(p) for p in (1, 10, 11, 100, 101, 10_000)] == [50, 50, 200, 200, 400, 400]


def test_means_never_fall_as_tags_rise_and_a_round_trip_keeps_them() -> None:
    calib = calibration.fit([5, 6, 7, 8], [100, 10, 50, 60], bins=4)
    assert list(calib.means) == sorted(calib.means)
    assert calibration.Calibration.from_dict(json.loads(json.dumps(calib.as_dict()))) == calib
    assert calibration.Calibration.from_dict({}) is None


def test_bad_input_is_named() -> None:
    with pytest.raises(TaggerError, match="as many true lengths"):
        calibration.fit([1, 2], [3])
    with pytest.raises(TaggerError, match="calibration: need sorted edges"):
        calibration.Calibration.from_dict({"edges": [5, 1], "means": [1.0, 2.0, 3.0]})
    with pytest.raises(TaggerError, match="calibration: expected edges and means"):
        calibration.Calibration.from_dict({"edges": [1]})


def test_training_calibrates_and_routing_gets_the_mean(
    tiny_tagger: Path, synthetic_jsonl: Path, tmp_path: Path
) -> None:
    from blockctl.tagger.cache import predict_lengths
    from blockctl.tagger.predict import Tagger
    from blockctl.tagger.train import calibrate

    saved = json.loads((tiny_tagger / "config.json").read_text())["calibration"]
    assert saved["examples"] > 0 and len(saved["means"]) == len(saved["edges"]) + 1
    tagger = Tagger(tiny_tagger)
    assert tagger.calibration is not None
    prompts = ["brief w1 w2", "w3 w4 w5", "detailed w6 essay"]
    typical = tagger.predict(prompts, calibrated=False)
    assert tagger.predict(prompts) == [tagger.calibration(n) for n in typical]
    assert predict_lengths(tiny_tagger, prompts, cache_dir=tmp_path / "cache") == tagger.predict(prompts)

    bare = tmp_path / "bare"  # a tagger saved before calibration existed: calibrate it in place
    shutil.copytree(tiny_tagger, bare)
    config = json.loads((bare / "config.json").read_text())
    config["calibration"] = {}
    (bare / "config.json").write_text(json.dumps(config))
    assert Tagger(bare).predict(prompts) == typical
    calib = calibrate(bare, str(synthetic_jsonl))
    assert Tagger(bare).predict(prompts) == [calib(n) for n in typical]
    assert json.loads((bare / "config.json").read_text())["fingerprint"] == config["fingerprint"]


def test_each_bin_keeps_the_distribution_of_its_true_lengths() -> None:
    predicted = [10] * 50 + [100] * 50
    actual = list(range(1, 51)) + list(range(100, 600, 10))
    calib = calibration.fit(predicted, actual, bins=2)
    short, long = calib.atoms(3), calib.atoms(500)
    assert short is not None and long is not None
    assert len(short) == calibration.QUANTILES and list(short) == sorted(short)
    assert short[0] <= 3 and short[-1] >= 48  # spans the bin's own lengths, and only those
    assert long[0] >= 100 and long[-1] <= 590
    assert calibration.Calibration.from_dict(json.loads(json.dumps(calib.as_dict()))) == calib
    with pytest.raises(TaggerError, match="one non-empty quantile list per bin"):
        calibration.Calibration.from_dict({"edges": [1], "means": [1.0, 2.0], "quantiles": [[1]]})


def test_interval_coverage_counts_true_lengths_inside_p10_p90() -> None:
    predicted = [10] * 100
    actual = list(range(1, 101))
    calib = calibration.fit(predicted, actual, bins=1)
    cover = calibration.interval_coverage(calib, predicted, actual)
    assert cover is not None and abs(cover["coverage"] - 0.8) <= 0.03
    assert calibration.interval_coverage(calib, predicted, [1000] * 100)["coverage"] == 0.0  # type: ignore[index]
    assert calibration.interval_coverage(calibration.Calibration((), (5.0,)), [1], [1]) is None
