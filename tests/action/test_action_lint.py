"""The action's static checks: hadolint, the GitHub action/workflow JSON schemas, and that
action.yml hands every input to the container."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / "examples" / "workflows").glob("*.yml")) + \
    sorted((ROOT / "tests" / "container" / "workflows").glob("*.yml")) + \
    [ROOT / ".github" / "workflows" / "release.yml"]


def tool(name: str) -> str:
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if path is None:
        pytest.skip(f"{name} is not installed (tests/container/setup.sh installs it)")
    return path


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_hadolint_passes():
    proc = run(tool("hadolint"), "Dockerfile")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_really_checks():
    """The linter is not a no-op here: an unpinned pip install in a Dockerfile is reported."""
    proc = subprocess.run([tool("hadolint"), "-"], input="FROM debian:12\nRUN pip install flask\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3013" in proc.stdout


def test_action_yml_matches_the_github_action_schema():
    proc = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", "action.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_match_the_github_workflow_schema(workflow):
    proc = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
               str(workflow))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_rejects_a_broken_action(tmp_path):
    bad = tmp_path / "action.yml"
    bad.write_text("name: x\ndescription: y\nruns:\n  using: docker\n  options: --gpus all\n")
    proc = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", str(bad))
    assert proc.returncode != 0


def test_every_input_reaches_the_container():
    """run -> upload -> publish: the run step gets every input but the upload's name; the
    publish step the same less the cache, with the uploaded artifact's URL."""
    import yaml

    action = yaml.safe_load((ROOT / "action.yml").read_text())
    steps = {step["id"]: step for step in action["runs"]["steps"]}
    assert [step["id"] for step in action["runs"]["steps"]] == ["sdopt", "upload", "publish"]
    run_env, publish_env = steps["sdopt"]["env"], steps["publish"]["env"]
    assert (run_env["SDOPT_PHASE"], publish_env["SDOPT_PHASE"]) == ("run", "publish")
    for name in action["inputs"]:
        assert "-" not in name, f"input {name}: dashes cannot be read from a shell"
        if name == "artifact_name":
            assert steps["upload"]["with"]["name"] == "${{ inputs.artifact_name }}"
            continue
        assert run_env.get(f"INPUT_{name.upper()}") == f"${{{{ inputs.{name} }}}}", name
        if name == "artifact_url":
            assert publish_env["INPUT_ARTIFACT_URL"] == \
                "${{ steps.upload.outputs.artifact-url || inputs.artifact_url }}"
        elif name != "cache":
            assert publish_env.get(f"INPUT_{name.upper()}") == f"${{{{ inputs.{name} }}}}", name
    assert "env.ACT" in steps["upload"]["if"] and "!cancelled()" in steps["upload"]["if"]
    assert steps["upload"]["uses"].startswith("actions/upload-artifact@v4")
    for name, spec in action["outputs"].items():
        if name in ("comment_url", "check_url"):    # set by the publish step, or the run step
            expected = f"${{{{ steps.publish.outputs.{name} || steps.sdopt.outputs.{name} }}}}"
        elif name == "artifact_url":
            expected = "${{ steps.upload.outputs.artifact-url }}"
        else:
            expected = f"${{{{ steps.sdopt.outputs.{name} }}}}"
        assert spec["value"] == expected, name


def test_outputs_in_action_yml_are_the_ones_the_entrypoint_writes(tmp_path):
    import yaml

    from action.inputs import ActionInputs
    from action.main import outputs_for

    action = yaml.safe_load((ROOT / "action.yml").read_text())
    written = outputs_for(ActionInputs(), tmp_path, None, None, "")
    assert set(written) == set(action["outputs"]) - {"artifact_url"}


def test_shell_scripts_parse():
    for script in [ROOT / "action" / "run-container.sh", *(ROOT / "tests" / "container").glob("*.sh")]:
        proc = run("bash", "-n", str(script))
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


def _runs_with_expressions(text: str) -> list[str]:
    """``run:`` scripts (one line or a block) that contain a ``${{ }}`` expression: GitHub
    splices its value into the script before the shell parses it (script injection)."""
    import yaml

    found = []

    def walk(node):
        if isinstance(node, dict):
            script = node.get("run")
            if isinstance(script, str) and "${{" in script:
                found.append(script.strip().splitlines()[0])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(text))
    return found


def _workflow_texts() -> dict[str, str]:
    from sdopt.gate.scaffold import InitOptions, plan

    texts = {str(p.relative_to(ROOT)): p.read_text() for p in WORKFLOWS}
    texts["action.yml"] = (ROOT / "action.yml").read_text()
    written = plan(InitOptions(model="tiny", prompts=["a cat"]), workflows=True)
    texts.update({f"sdopt init: {name}": text for name, text in written.items()
                  if name.endswith(".yml")})
    return texts


def test_no_workflow_splices_an_expression_into_a_run_script():
    texts = _workflow_texts()
    assert len(texts) >= 4
    assert {name: found for name, text in texts.items()
            if (found := _runs_with_expressions(text))} == {}


def test_the_splice_check_sees_one():
    text = "jobs:\n  a:\n    steps:\n      - run: |\n          echo ok\n          echo ${{ x }}\n"
    assert _runs_with_expressions(text) == ["echo ok"]


# Self-hosted runner labels the examples use (actionlint only knows GitHub's own).
ACTIONLINT_CONFIG = "self-hosted-runner:\n  labels: [gpu, a100, l4]\n"


def _lint_tree(tmp_path: Path) -> Path:
    """A repository holding action.yml at its root (used as `uses: ./` by a test workflow, so
    actionlint checks the action's metadata and the inputs given to it), every example
    workflow, the release workflow, the container tests' workflows and what `sdopt init`
    writes (with `--action ./`, so its inputs are checked against action.yml too)."""
    from sdopt.gate.scaffold import InitOptions, plan

    repo = tmp_path / "repo"
    flows = repo / ".github" / "workflows"
    flows.mkdir(parents=True)
    shutil.copy(ROOT / "action.yml", repo / "action.yml")
    (repo / ".github" / "actionlint.yaml").write_text(ACTIONLINT_CONFIG)
    for path in WORKFLOWS:
        text = path.read_text().replace("org/sdopt-action@v1", "./")
        (flows / f"{path.parent.name}-{path.name}").write_text(text)
    written = plan(InitOptions(model="tiny", prompts=["a cat"], action="./"), workflows=True)
    for name, text in written.items():
        if name.endswith(".yml"):
            (flows / f"init-{Path(name).name}").write_text(text)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo


def test_actionlint_reports_nothing(tmp_path):
    repo = _lint_tree(tmp_path)
    proc = subprocess.run([tool("actionlint"), "-no-color", "-shellcheck=", "-pyflakes="],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((repo / ".github" / "workflows").glob("*.yml"))) >= len(WORKFLOWS) + 2


def test_actionlint_really_checks(tmp_path):
    """Not a no-op: an input action.yml does not declare is reported."""
    repo = _lint_tree(tmp_path)
    flow = repo / ".github" / "workflows" / "bad.yml"
    flow.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                    "      - uses: ./\n        with:\n          no_such_input: 1\n")
    proc = subprocess.run([tool("actionlint"), "-no-color", "-shellcheck=", "-pyflakes=",
                           str(flow)], cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no_such_input" in proc.stdout


def test_sdopt_init_workflows_match_the_github_workflow_schema(tmp_path):
    from sdopt.gate.scaffold import InitOptions, plan

    written = plan(InitOptions(model="tiny", prompts=["a cat"]), workflows=True)
    paths = []
    for name, text in written.items():
        if name.endswith(".yml"):
            paths.append(tmp_path / Path(name).name)
            paths[-1].write_text(text)
    assert len(paths) == 2
    proc = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
               *map(str, paths))
    assert proc.returncode == 0, proc.stdout + proc.stderr
