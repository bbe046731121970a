from pathlib import Path

import pytest

from sdopt.gate.config import load_config, parse_config
from sdopt.errors import SdoptError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sdopt.toml"


def test_the_shipped_example_is_valid_and_its_defaults_are_the_documented_ones():
    config = load_config(EXAMPLE)
    assert config.model == "tiny"
    assert config.gate.latency_tolerance == 0.10 and config.gate.alpha == 0.01
    assert config.bench.variants == ["original", "optimized"]
    assert config.resolve(config.baseline.path) == EXAMPLE.parent / ".sdopt" / "baseline"


def _error(tmp_path, text: str) -> str:
    path = tmp_path / "sdopt.toml"
    path.write_text(text)
    with pytest.raises(SdoptError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("text, expected", [
    ('model = "tiny"\n[bench\n', "is not valid TOML"),
    ('model = "tiny"\n[bench]\nrun = 3\n', "unknown field 'bench.run'"),
    ('model = "tiny"\nmodle = "x"\n', "unknown field 'modle'"),
    ('[bench]\nruns = 3\n', "field 'model' is required"),
    ('model = "tiny"\n[bench]\nruns = 0\n', "field 'bench.runs'"),
    ('model = "tiny"\n[bench]\nheight = 65\n', "field 'bench.height'"),
    ('model = "tiny"\n[bench]\nprompts = ["ok", "  "]\n', "field 'bench.prompts'"),
    ('model = "tiny"\n[bench]\nvariants = ["original", "fast"]\n', "field 'bench.variants"),
    ('model = "tiny"\n[gate]\nalpha = 2\n', "field 'gate.alpha'"),
    ('model = "tiny"\n[gate]\non_environment_mismatch = "ignore"\n',
     "field 'gate.on_environment_mismatch'"),
    ('model = "tiny"\n[optimize]\nsaved_model = "a"\ncandidate = "torch_eager/bf16"\n',
     "saved_model and candidate are both set"),
    ('model = "  "\n', "field 'model'"),
    ('model = "tiny"\nroot = "/"\n', "unknown field 'root'"),
    ('model = "tiny"\n[optimize]\nmetric_aggregate = "worst"\n',
     "field 'optimize.metric_aggregate'"),
])
def test_bad_configs_name_the_file_and_the_field(tmp_path, text, expected):
    message = _error(tmp_path, text)
    assert expected in message
    assert "sdopt.toml" in message


def test_missing_config_is_one_clear_line(tmp_path):
    with pytest.raises(SdoptError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "sdopt.toml").write_text(
        'model = "tiny"\noutput_dir = "out"\n[optimize]\nsaved_model = "opt"\n')
    config = load_config(tmp_path / "sub")  # a directory means its sdopt.toml
    assert config.resolve(config.output_dir) == tmp_path / "sub" / "out"
    assert config.resolve(config.optimize.saved_model) == tmp_path / "sub" / "opt"
    assert config.model_ref() == "tiny"  # a preset stays a preset


def test_public_dict_carries_the_contract_fields():
    cfg = parse_config({"model": "tiny", "bench": {"seeds": [3, 4], "runs": 7}}).public_dict()
    for key in ("model", "prompts", "seeds", "height", "width", "steps", "guidance_scale",
                "batch", "runs"):
        assert key in cfg
    assert cfg["seeds"] == [3, 4] and cfg["runs"] == 7


def test_optimize_metric_aggregate_defaults_to_every_prompt(tmp_path):
    (tmp_path / "sdopt.toml").write_text('model = "tiny"\n')
    assert load_config(tmp_path).optimize.metric_aggregate == "max"
    (tmp_path / "sdopt.toml").write_text('model = "tiny"\n[optimize]\nmetric_aggregate = "mean"\n')
    assert load_config(tmp_path).optimize.metric_aggregate == "mean"
