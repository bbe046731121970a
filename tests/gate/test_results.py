"""The gate's one reader: results and verdicts checked against the shipped JSON Schemas, with one
line naming the file and the field; earlier files still load; exit codes defined once."""

import json
import shutil
from pathlib import Path

import pytest

from sdopt.errors import ExitCode, SdoptError
from sdopt.gate.results import (NOT_COMPARABLE, PASS, REGRESSION, exit_code, read_results,
                                read_verdict)

DATA = Path(__file__).parents[1] / "data" / "report"


def test_results_written_before_the_restructure_still_load():
    for directory in ("baseline", "current"):
        results = read_results(DATA / directory)
        assert results["variants"], directory


def test_a_field_that_breaks_the_schema_is_named(tmp_path):
    data = json.loads((DATA / "current" / "results.json").read_text())
    data["variants"]["optimized"]["latency_s"]["samples"] = ["fast"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(SdoptError) as err:
        read_results(tmp_path, what="baseline")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "results.json") in message
    assert "variants.optimized.latency_s.samples.0" in message


def test_nan_in_a_results_file_is_refused_with_one_line(tmp_path):
    """NaN compares false with every schema bound; Python's JSON reader takes it unless told."""
    text = (DATA / "current" / "results.json").read_text()
    data = json.loads(text)
    median = data["variants"]["optimized"]["latency_s"]["median"]
    (tmp_path / "results.json").write_text(text.replace(json.dumps(median), "NaN", 1))
    with pytest.raises(SdoptError, match=r"results.json' is not valid JSON: it holds NaN") as err:
        read_results(tmp_path)
    assert "\n" not in str(err.value)


def test_a_verdict_is_checked_against_the_verdict_schema_not_the_results_one(tmp_path):
    old = {"schema_version": 1, "kind": "sdopt-verdict", "verdict": "pass", "reasons": [],
           "variant": "optimized",
           "latency": {"baseline_median_s": 1.0, "current_median_s": 1.0, "ratio": 1.0,
                       "tolerance": 0.1, "p_value": 0.5, "test": "mann-whitney-u",
                       "regressed": False},
           # Identical images: earlier verdicts wrote 100 dB, current ones null.
           "quality": {"metric": "psnr+ssim", "threshold": 30, "regressed": False,
                       "images": [{"prompt": "p", "seed": 0, "psnr_db": 100.0, "ssim": 1.0,
                                   "baseline_path": "a.png", "current_path": "b.png",
                                   "regressed": False}]},
           "baseline": {"source": "x", "environment_match": True}}
    (tmp_path / "verdict.json").write_text(json.dumps(old))
    assert read_verdict(tmp_path)["verdict"] == PASS
    merged = {"schema_version": 1, "kind": "sdopt-verdict", "verdict": "regression",
              "reasons": ["leg: x"], "legs": {"leg": "regression"}}
    (tmp_path / "verdict.json").write_text(json.dumps(merged))
    assert read_verdict(tmp_path)["legs"] == {"leg": "regression"}
    del old["latency"]
    (tmp_path / "verdict.json").write_text(json.dumps(old))
    with pytest.raises(SdoptError, match="'latency' is a required property"):
        read_verdict(tmp_path)


def test_another_kind_or_version_is_refused(tmp_path):
    shutil.copy(DATA / "current" / "results.json", tmp_path / "verdict.json")
    with pytest.raises(SdoptError, match="not an sdopt verdict file"):
        read_verdict(tmp_path)


def test_exit_codes_are_the_documented_ones():
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3]
    assert exit_code({"verdict": PASS}) == ExitCode.PASS
    assert exit_code({"verdict": REGRESSION}) == ExitCode.REGRESSION
    assert exit_code({"verdict": NOT_COMPARABLE}) == ExitCode.NOT_COMPARABLE
    assert SdoptError("x").exit_code == ExitCode.BAD_INPUT


def test_start_image_and_mask_hashes_follow_the_schema(tmp_path):
    """#18: results of an image-to-image bench record one sha256 per prompt (null: the default
    image); results without them (text-to-image, or written before) load as before."""
    data = json.loads((DATA / "current" / "results.json").read_text())
    prompts = len(data["config"]["prompts"])
    data["config"]["start_image_sha256"] = ["0123456789abcdef" * 4] * prompts
    data["config"]["mask_image_sha256"] = [None] * prompts
    (tmp_path / "results.json").write_text(json.dumps(data))
    assert read_results(tmp_path)["config"]["mask_image_sha256"] == [None] * prompts
    data["config"]["start_image_sha256"][0] = "not a hash"
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(SdoptError, match=r"config\.start_image_sha256\.0"):
        read_results(tmp_path)
