"""``sdopt merge``: result directories of a CI matrix -> one verdict (sdopt.gate.merge) and one
report (sdopt.report.merged), written together by the command."""

import json

import pytest
from click.testing import CliRunner

from sdopt.cli import main
from sdopt.errors import ExitCode, SdoptError
from sdopt.gate.merge import load_legs, merged_verdict
from sdopt.gate.results import read_verdict
from sdopt.report.markdown import MAX_CHARS
from sdopt.report.merged import merged_markdown
from tests.action.test_action_main import results_doc, verdict_doc


def leg(root, name, *, device="NVIDIA L4", orig=0.4, opt=0.2, state="pass", reasons=()):
    d = root / name
    d.mkdir(parents=True)
    results = results_doc(orig=orig, opt=opt)
    results["environment"]["device"] = {"kind": "cuda", "name": device}
    (d / "results.json").write_text(json.dumps(results))
    if state:
        (d / "verdict.json").write_text(json.dumps(verdict_doc(state, reasons)))
    return d


def merge(dirs, out, *more):
    return CliRunner().invoke(main, ["merge", *map(str, dirs), "--out", str(out), *more])


def test_worst_leg_decides_and_report_lists_every_leg(tmp_path):
    a = leg(tmp_path, "a100", device="NVIDIA A100", orig=0.3, opt=0.1)
    b = leg(tmp_path, "l4", state="regression", reasons=["latency 1.4x the baseline's"])
    c = leg(tmp_path, "cpu|<b>", device="@someone", state="not_comparable", reasons=["other CPU"])
    res = merge([a, b, c], tmp_path / "merged")
    assert res.exit_code == ExitCode.REGRESSION, res.output
    verdict = read_verdict(tmp_path / "merged" / "verdict.json")   # follows the verdict schema
    assert verdict["verdict"] == "regression"
    assert verdict["reasons"] == ["l4: latency 1.4x the baseline's", "cpu|<b>: other CPU"]
    assert verdict["legs"] == {"a100": "pass", "l4": "regression", "cpu|<b>": "not_comparable"}
    merged = json.loads((tmp_path / "merged" / "merged.json").read_text())
    assert [x["name"] for x in merged["legs"]] == ["a100", "l4", "cpu|<b>"]
    assert merged["legs"][0]["speedup"] == pytest.approx(3.0)
    report = (tmp_path / "merged" / "report.md").read_text()
    assert report.startswith("**sdopt: regression** across 3 jobs\n")
    assert "| a100 | NVIDIA A100 | 0.3000 | 0.1000 | 3.00x | pass |" in report
    assert "<b>" not in report and "@someone" not in report and "cpu\\|" in report
    assert report.count("<details><summary>") == 3    # each job's own report, folded


def test_not_comparable_beats_pass_and_exits_3(tmp_path):
    a, b = leg(tmp_path, "a"), leg(tmp_path, "b", state="not_comparable")
    res = merge([a, b], tmp_path / "m1")
    assert res.exit_code == ExitCode.NOT_COMPARABLE == 3, res.output
    assert read_verdict(tmp_path / "m1")["verdict"] == "not_comparable"


def test_no_verdicts_is_none_and_exits_0(tmp_path):
    c, d = leg(tmp_path, "c", state=None), leg(tmp_path, "d", state=None)
    res = merge([c, d], tmp_path / "m2")
    assert res.exit_code == 0 and "no verdicts" in res.output
    assert not (tmp_path / "m2" / "verdict.json").exists()
    assert (tmp_path / "m2" / "report.md").read_text().startswith("**sdopt results** across 2")


def test_many_legs_share_one_comment(tmp_path):
    legs = load_legs([leg(tmp_path, f"job-{i:02d}", reasons=["x" * 200] * 3) for i in range(40)])
    text = merged_markdown(legs, merged_verdict(legs))
    assert len(text) <= MAX_CHARS
    assert text.count("| job-") == 40                  # the table always has every job


def test_bad_inputs_are_one_line_errors(tmp_path):
    a = leg(tmp_path, "a")
    with pytest.raises(SdoptError, match="not found"):
        load_legs([a, tmp_path / "missing"])
    (tmp_path / "x" / "a").mkdir(parents=True)
    with pytest.raises(SdoptError, match="two result directories are named 'a'"):
        load_legs([a, tmp_path / "x" / "a"])
    bad = leg(tmp_path, "bad")
    (bad / "verdict.json").write_text(json.dumps({**verdict_doc(), "verdict": "meh"}))
    with pytest.raises(SdoptError, match="verdict '.*bad/verdict.json' does not follow the "
                                         "verdict schema v1: field 'verdict'"):
        load_legs([bad])
    res = merge([bad], tmp_path / "m")
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert not (tmp_path / "m").exists()            # nothing half written


def test_cli_exit_codes_and_existing_output(tmp_path):
    a, b = leg(tmp_path, "a"), leg(tmp_path, "b", state="regression", reasons=["slow"])
    res = merge([a, b], tmp_path / "m")
    assert res.exit_code == 1, res.output
    res = merge([a], tmp_path / "m")
    assert res.exit_code == 2 and "already exists" in res.output
    res = merge([a], tmp_path / "m", "--overwrite")
    assert res.exit_code == 0, res.output
    res = merge([tmp_path / "nope"], tmp_path / "z")
    assert res.exit_code == 2 and res.output.count("\n") == 1


def test_a_leg_without_a_verdict_among_judged_legs_is_not_a_pass(tmp_path):
    """Fail closed: a matrix job that did not judge its results (its gate stopped early) makes
    the merge "not comparable" (exit 3) and says which job, instead of a pass."""
    a, b = leg(tmp_path, "a"), leg(tmp_path, "b", state=None)
    res = merge([a, b], tmp_path / "m")
    assert res.exit_code == ExitCode.NOT_COMPARABLE, res.output
    verdict = read_verdict(tmp_path / "m")
    assert verdict["verdict"] == "not_comparable"
    assert any(r.startswith("b: no verdict.json") for r in verdict["reasons"])
    c = leg(tmp_path, "c", state="regression", reasons=["slow"])
    assert merged_verdict(load_legs([a, b, c]))["verdict"] == "regression"   # the worst still wins


@pytest.mark.parametrize("hostile", [
    "verdict-not-json", "verdict-wrong-type", "verdict-reasons-not-strings", "verdict-link",
    "results-link", "leg-link"])
def test_hostile_legs_are_one_line_errors_without_traceback(tmp_path, hostile):
    """A downloaded leg is untrusted: each malformed or linked file is one line naming it,
    exit 2, nothing written (links are never followed: a leg's verdict.json pointing at a file
    outside is refused)."""
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(verdict_doc("pass")))
    a = leg(tmp_path / "legs", "a")
    target = a
    if hostile == "verdict-not-json":
        (a / "verdict.json").write_text("{not json")
    elif hostile == "verdict-wrong-type":
        (a / "verdict.json").write_text(json.dumps([1, 2]))
    elif hostile == "verdict-reasons-not-strings":
        (a / "verdict.json").write_text(json.dumps({**verdict_doc(), "reasons": [{"x": 1}]}))
    elif hostile == "verdict-link":
        (a / "verdict.json").unlink()
        (a / "verdict.json").symlink_to(secret)
    elif hostile == "results-link":
        (a / "results.json").rename(tmp_path / "r.json")
        (a / "results.json").symlink_to(tmp_path / "r.json")
    else:
        target = tmp_path / "legs" / "link"
        target.symlink_to(a)
    res = merge([target], tmp_path / "m")
    assert res.exit_code == ExitCode.BAD_INPUT, res.output
    assert res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
    assert "Traceback" not in res.output and res.exception is None or \
        isinstance(res.exception, SystemExit)
    assert not (tmp_path / "m").exists()
