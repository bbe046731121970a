"""Workflow commands: outputs (delimiter syntax), job summary cap, annotations, masks, inputs."""

import io

import pytest

from action import workflow
from action.inputs import read_inputs
from sdopt.errors import SdoptError


def parse_github_output(text: str) -> dict[str, str]:
    """Parse $GITHUB_OUTPUT the way the runner does (name=value and name<<DELIM blocks)."""
    out, lines, i = {}, text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            i += 1
            value = []
            while lines[i] != delim:
                value.append(lines[i])
                i += 1
            out[name] = "\n".join(value)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


def test_outputs_round_trip_multiline_and_tricky_values(tmp_path):
    path = tmp_path / "out"
    path.write_text("earlier=1\n")
    values = {"verdict": "pass", "report": "line 1\nline 2\n\nEOF\n", "empty": "",
              "eq": "a=b<<c"}
    workflow.set_outputs(values, {"GITHUB_OUTPUT": str(path)})
    assert parse_github_output(path.read_text()) == {"earlier": "1", **values}


def test_output_names_are_validated():
    with pytest.raises(ValueError):
        workflow.format_outputs({"a\nb": "x"})


def test_summary_appends_and_stays_under_one_mib(tmp_path):
    path = tmp_path / "summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(path)}
    workflow.write_summary("# first\n", env)
    workflow.write_summary("é" * 800_000, env)          # 1.6 MB of UTF-8
    data = path.read_bytes()
    assert len(data) <= workflow.SUMMARY_LIMIT_BYTES
    text = data.decode("utf-8")                          # never cut inside a character
    assert text.startswith("# first\n") and "truncated" in text


def test_summary_without_runner_is_a_no_op():
    assert workflow.write_summary("x", {}) is None


def test_annotations_escape_message_and_properties():
    buf = io.StringIO()
    workflow.error("50% slower\nsee ::report", title="a, b: c", file="cfg.toml", stream=buf)
    assert buf.getvalue() == ("::error title=a%2C b%3A c,file=cfg.toml::"
                              "50%25 slower%0Asee ::report\n")


def test_mask_each_line_of_a_secret():
    buf = io.StringIO()
    workflow.mask("abc\ndef", stream=buf)
    assert buf.getvalue() == "::add-mask::abc\n::add-mask::def\n"


def test_inputs_defaults_and_overrides():
    inp = read_inputs({})
    assert (inp.mode, inp.config, inp.comment, inp.gpus) == ("gate", "sdopt.toml", "always", "auto")
    inp = read_inputs({"INPUT_MODE": "Optimize", "INPUT_LATENCY_TOLERANCE": "0.1",
                       "INPUT_CONFIG_OVERRIDES": "# note\nbench.runs = 5\nmodel = 'tiny'\n",
                       "INPUT_COMMENT": "false", "INPUT_FAIL_ON": "regression",
                       "INPUT_GPUS": "0,1"})
    assert inp.mode == "optimize"
    assert [o.line for o in inp.overrides] == ["gate.latency_tolerance = 0.1", "bench.runs = 5",
                                               "model = 'tiny'"]
    assert inp.comment == "never" and inp.fail_on == ("regression",) and inp.gpus == "0,1"


@pytest.mark.parametrize("env, needle", [
    ({"INPUT_MODE": "deploy"}, "input 'mode'"),
    ({"INPUT_LATENCY_TOLERANCE": "fast"}, "input 'latency_tolerance'"),
    ({"INPUT_PSNR_MIN_DB": "-1"}, "input 'psnr_min_db'"),
    ({"INPUT_COMMENT": "maybe"}, "input 'comment'"),
    ({"INPUT_CONFIG_OVERRIDES": "no equals sign"}, "input 'config_overrides' line 1"),
    ({"INPUT_GPUS": "some"}, "input 'gpus'"),
    ({"INPUT_FAIL_ON": "slowness"}, "input 'fail_on'"),
    ({"INPUT_COMMENT_KEY": "a b"}, "input 'comment_key'"),
    ({"INPUT_MODE": "comment"}, "input 'artifact_dir'"),
])
def test_bad_inputs_name_the_input(env, needle):
    with pytest.raises(SdoptError, match=needle):
        read_inputs(env)


@pytest.mark.parametrize("value,policy", [("true", "always"), ("FALSE", "never"),
                                          ("on-change", "on-change"),
                                          ("on-regression", "on-regression"), ("", "always")])
def test_comment_policy_input(value, policy):
    assert read_inputs({"INPUT_COMMENT": value}).comment == policy
