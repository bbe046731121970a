"""``sdopt merge``: result directories of a CI matrix -> one verdict and one report."""

import json

import pytest
from click.testing import CliRunner

from sdopt.cli import main
from sdopt.errors import SdoptError
from sdopt.gate.merge import merge
from tests.test_action_main import results_doc, verdict_doc


def leg(root, name, *, device="NVIDIA L4", orig=0.4, opt=0.2, state="pass", reasons=()):
    d = root / name
    d.mkdir(parents=True)
    results = results_doc(orig=orig, opt=opt)
    results["environment"] = {"device": {"kind": "cuda", "name": device}}
    (d / "results.json").write_text(json.dumps(results))
    if state:
        (d / "verdict.json").write_text(json.dumps(verdict_doc(state, reasons)))
    return d


def test_worst_leg_decides_and_report_lists_every_leg(tmp_path):
    a = leg(tmp_path, "a100", device="NVIDIA A100", orig=0.3, opt=0.1)
    b = leg(tmp_path, "l4", state="regression", reasons=["latency 1.4x the baseline's"])
    c = leg(tmp_path, "cpu|<b>", device="@someone", state="not_comparable", reasons=["other CPU"])
    verdict = merge([a, b, c], tmp_path / "merged")
    assert verdict["verdict"] == "regression"
    assert verdict["reasons"] == ["l4: latency 1.4x the baseline's", "cpu|<b>: other CPU"]
    assert verdict["legs"] == {"a100": "pass", "l4": "regression", "cpu|<b>": "not_comparable"}
    merged = json.loads((tmp_path / "merged" / "merged.json").read_text())
    assert [x["name"] for x in merged["legs"]] == ["a100", "l4", "cpu|<b>"]
    assert merged["legs"][0]["speedup"] == pytest.approx(3.0)
    report = (tmp_path / "merged" / "report.md").read_text()
    assert "| a100 | NVIDIA A100 | 0.3000 | 0.1000 | 3.00x | pass |" in report
    assert "<b>" not in report and "@someone" not in report and "cpu\\|" in report
    assert json.loads((tmp_path / "merged" / "verdict.json").read_text())["verdict"] == "regression"


def test_not_comparable_beats_pass_and_no_verdicts_is_none(tmp_path):
    a, b = leg(tmp_path, "a"), leg(tmp_path, "b", state="not_comparable")
    assert merge([a, b], tmp_path / "m1")["verdict"] == "not_comparable"
    c, d = leg(tmp_path, "c", state=None), leg(tmp_path, "d", state=None)
    assert merge([c, d], tmp_path / "m2") is None
    assert not (tmp_path / "m2" / "verdict.json").exists()
    assert "sdopt results" in (tmp_path / "m2" / "report.md").read_text()


def test_bad_inputs_are_one_line_errors(tmp_path):
    a = leg(tmp_path, "a")
    with pytest.raises(SdoptError, match="not found"):
        merge([a, tmp_path / "missing"], tmp_path / "m")
    (tmp_path / "x" / "a").mkdir(parents=True)
    with pytest.raises(SdoptError, match="two result directories are named 'a'"):
        merge([a, tmp_path / "x" / "a"], tmp_path / "m")
    bad = leg(tmp_path, "bad")
    (bad / "verdict.json").write_text('{"kind": "sdopt-verdict", "verdict": "meh"}')
    with pytest.raises(SdoptError, match="verdict '.*bad/verdict.json' is not an sdopt verdict"):
        merge([bad], tmp_path / "m")
    assert not (tmp_path / "m").exists()            # nothing half written


def test_cli_exit_codes_and_existing_output(tmp_path):
    a, b = leg(tmp_path, "a"), leg(tmp_path, "b", state="regression", reasons=["slow"])
    runner = CliRunner()
    res = runner.invoke(main, ["merge", str(a), str(b), "--out", str(tmp_path / "m")])
    assert res.exit_code == 1, res.output
    res = runner.invoke(main, ["merge", str(a), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(main, ["merge", str(a), "--out", str(tmp_path / "m"), "--overwrite"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["merge", str(tmp_path / "nope"), "--out", str(tmp_path / "z")])
    assert res.exit_code == 2 and res.output.count("\n") == 1
