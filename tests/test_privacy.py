"""OpenVINO's and NNCF's usage telemetry stays off in sdopt's processes unless the user opted in:
nothing is written under ~/intel, no event is built, and an explicit choice is kept."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("openvino_telemetry")

CONVERT = """
import json, sys
{before}
import sdopt
import torch, openvino as ov
import openvino_telemetry as tm
from openvino_telemetry.utils.opt_in_checker import OptInChecker
ov.convert_model(torch.nn.Linear(4, 4).eval(), example_input=torch.zeros(1, 4))
print(json.dumps({{"consent": tm.Telemetry().consent,
                  "check": OptInChecker().check(False, True).name}}))
"""


def _run(home, before=""):
    # No CI variable: OpenVINO's own CI switch would hide what sdopt does.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", CONVERT.format(before=before)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_without_a_consent_file_nothing_is_sent_or_written(tmp_path):
    assert _run(tmp_path) == {"consent": False, "check": "DECLINED"}
    assert not (tmp_path / "intel").exists()


def test_an_instance_configured_before_sdopt_is_asked_again(tmp_path):
    # OpenVINO used first, sdopt imported later in the same process.
    before = ("import openvino_telemetry as tm\n"
              "t = tm.Telemetry(app_name='x', app_version='0', tid=None, backend='ga4',"
              " enable_opt_in_dialog=False, disable_in_ci=True)\n"
              "assert t.consent")
    assert _run(tmp_path, before)["consent"] is False


@pytest.mark.parametrize("choice, expected", [("1", "ACCEPTED"), ("0", "DECLINED")])
def test_an_explicit_choice_is_kept(tmp_path, choice, expected):
    (tmp_path / "intel").mkdir()
    (tmp_path / "intel" / "openvino_telemetry").write_text(choice)
    assert _run(tmp_path)["check"] == expected
