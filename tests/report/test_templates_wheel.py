"""The report templates: top-level templates/, shipped in the wheel as the package
sdopt.templates, and overridable from a user directory (``templates_dir``, ``--templates``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from sdopt.errors import SdoptError
from sdopt.report import load_results, load_verdict, render_reports

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "report"
SNAPSHOTS = ROOT / "tests" / "snapshots"
ARTIFACT_URL = "https://github.com/o/r/actions/runs/1/artifacts/2"  # as in the snapshots


def _setuptools() -> dict:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return pyproject["tool"]["setuptools"]


def test_every_package_and_template_is_in_the_wheel_configuration():
    """The package list is written out (discovery cannot map templates/ to sdopt.templates):
    a new subpackage or template that it misses would be absent from installs only."""
    cfg = _setuptools()
    packages = set(cfg["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "sdopt").rglob("__init__.py")}
    assert on_disk <= packages, f"add to [tool.setuptools] packages: {sorted(on_disk - packages)}"
    assert cfg["package-dir"]["sdopt.templates"] == "templates"
    assert not (ROOT / "sdopt" / "templates").exists(), "the templates live in templates/ only"
    patterns = cfg["package-data"]["sdopt.templates"]
    for template in (ROOT / "templates").rglob("*.j2"):
        rel = template.relative_to(ROOT / "templates").as_posix()
        assert any(fnmatch(rel, p) for p in patterns), f"{rel} is not shipped: {patterns}"


@pytest.fixture(scope="module")
def recorded():
    current, cur_dir = load_results(DATA / "current")
    baseline, base_dir = load_results(DATA / "baseline")
    return current, cur_dir, baseline, base_dir, load_verdict(DATA / "verdict-regression.json")


def test_a_user_template_replaces_the_builtin_one(recorded, tmp_path):
    current, cur_dir, baseline, base_dir, verdict = recorded
    mine = tmp_path / "mine"
    (mine / "partials").mkdir(parents=True)
    (mine / "report.md.j2").write_text("Ours: {{ verdict.label }} for {{ model }}\n")
    (mine / "partials" / "summary.html.j2").write_text('<p id="our-summary">{{ model }}</p>\n')
    out = tmp_path / "out"
    render_reports(current, cur_dir, baseline=baseline, baseline_dir=base_dir, verdict=verdict,
                   markdown_path=out / "r.md", html_path=out / "r.html", templates_dir=mine)
    assert (out / "r.md").read_text() == f"Ours: regression for {current['config']['model']}\n"
    html = (out / "r.html").read_text(encoding="utf-8")
    assert '<p id="our-summary">' in html                # the user's partial...
    assert 'data-chart="chart-speedup"' in html          # ...inside the built-in page


def test_user_template_values_are_still_escaped(recorded, tmp_path):
    current, cur_dir, *_ = recorded
    doc = dict(current, config={**current["config"], "model": "<script>x</script> @team"})
    (tmp_path / "report.md.j2").write_text("{{ model }}\n")
    render_reports(doc, cur_dir, markdown_path=tmp_path / "r.md", templates_dir=tmp_path)
    text = (tmp_path / "r.md").read_text()
    assert "<script>" not in text and "@team" not in text


@pytest.mark.parametrize("template, message", [
    ("{% if %}\n", r"template '.*report\.md\.j2' line 1: "),
    ("{{ no_such_value }}\n", r"report template \(--templates '.*'\) failed: UndefinedError"),
])
def test_a_broken_user_template_is_one_line_naming_it(recorded, tmp_path, template, message):
    current, cur_dir, *_ = recorded
    (tmp_path / "report.md.j2").write_text(template)
    with pytest.raises(SdoptError, match=message):
        render_reports(current, cur_dir, markdown_path=tmp_path / "r.md", templates_dir=tmp_path)
    assert not (tmp_path / "r.md").exists()


def test_a_missing_templates_dir_is_bad_input(recorded, tmp_path):
    current, cur_dir, *_ = recorded
    with pytest.raises(SdoptError, match="templates directory '.*nope' not found"):
        render_reports(current, cur_dir, markdown_path=tmp_path / "r.md",
                       templates_dir=tmp_path / "nope")


# Run by the installed copy only: the editable install's finder is removed and every sdopt
# module must come from the target directory.
RENDER_FROM_WHEEL = textwrap.dedent("""
    import json, sys
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    target, data, out = sys.argv[1:4]
    import sdopt, sdopt.templates
    from sdopt.report import build_context, load_results, load_verdict, render_markdown, \\
        render_reports
    assert sdopt.__file__.startswith(target) and sdopt.templates.__file__.startswith(target), \\
        (sdopt.__file__, sdopt.templates.__file__)
    current, cur_dir = load_results(data + "/current")
    baseline, base_dir = load_results(data + "/baseline")
    verdict = load_verdict(data + "/verdict-regression.json")
    text = render_markdown(build_context(current, cur_dir, baseline=baseline,
                                         baseline_dir=base_dir, verdict=verdict, html=False,
                                         artifact_url=sys.argv[4]))
    open(out + "/report.md", "w", encoding="utf-8").write(text)
    render_reports(current, cur_dir, baseline=baseline, baseline_dir=base_dir, verdict=verdict,
                   html_path=out + "/report.html")
    print(json.dumps({"sdopt": sdopt.__file__}))
""")


@pytest.mark.slow  # builds and installs a wheel, then imports sdopt (torch) in a subprocess
def test_templates_are_found_from_an_installed_wheel(tmp_path):
    src = tmp_path / "src"  # a copy: an in-tree build would write build/ into the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("sdopt", "templates"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    wheel, = (tmp_path / "dist").glob("sdopt-*.whl")
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    assert (target / "sdopt" / "templates" / "partials" / "images.html.j2").is_file()

    cwd, out = tmp_path / "elsewhere", tmp_path / "out"  # not the checkout: no source on the path
    cwd.mkdir()
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env.update(PYTHONPATH=str(target), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", RENDER_FROM_WHEEL, str(target), str(DATA),
                           str(out), ARTIFACT_URL], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1])["sdopt"].startswith(str(target))
    assert (out / "report.md").read_text(encoding="utf-8") == \
        (SNAPSHOTS / "report-regression.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'data-chart="chart-speedup"' in html and html.count('<img src="data:image/') >= 4


def test_sdopt_report_takes_templates_from_the_option_and_the_config_key(tmp_path):
    """The same override from the command line (--templates) and from sdopt.toml ([report]
    templates, relative to the file)."""
    from click.testing import CliRunner

    from sdopt.cli import main
    from sdopt.gate.config import load_config

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md.j2").write_text("Ours for {{ model }}\n")
    out = tmp_path / "r.md"
    result = CliRunner().invoke(main, ["report", str(DATA / "current"), "--markdown", str(out),
                                       "--templates", str(mine)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("Ours for ")
    (tmp_path / "sdopt.toml").write_text('model = "tiny"\n[report]\ntemplates = "mine"\n')
    config = load_config(tmp_path / "sdopt.toml")
    assert config.resolve(config.report.templates) == mine
