"""The docs and the command line agree: every option README.md and docs/*.md name exists on the
command they name it for, every option has help text, one option name has one shape on every
command, its environment variable is SDOPT_<COMMAND>_<OPTION>, and every ``sdopt[extra]`` the
docs mention is an extra of pyproject.toml. Cheap: nothing is optimized or benchmarked."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sdopt.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Options of other programs that the docs show in code (not sdopt's).
FOREIGN_OPTIONS = {
    "--benchmark-json": "pytest-benchmark",
    "--prepare-only": "benchmarks/peers.py",
    "--index-url": "pip",
    "--extra-index-url": "pip",
}
# Code that starts with one of these runs another program: its options are that program's.
FOREIGN_COMMANDS = ("docker", "podman", "pip", "git", "python", "pytest", "make", "ls", "export",
                    "act", "check-jsonschema", "benchmarks/", "container:", "options:",
                    "opt_in_out")
# pytest-benchmark's benchmark names in results.pytest-benchmark.json, written like extras.
NOT_EXTRAS = {"original", "optimized"}
SHELL_FENCES = ("", "bash", "sh", "shell", "console")

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`([^`]+)`")
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_MENTION = re.compile(r"(?<![\w./-])sdopt\s+")


def commands(group: click.Group = main, path: tuple[str, ...] = ()):
    """Every command under ``group`` by its words, e.g. ("baseline", "save"): the group too."""
    found = {path: group}
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            found.update(commands(command, (*path, name)))
        else:
            found[(*path, name)] = command
    return found


COMMANDS = commands()


def option_names(command: click.Command) -> set[str]:
    params = command.get_params(click.Context(command))
    return {name for p in params if isinstance(p, click.Option)
            for name in (*p.opts, *p.secondary_opts)}


ALL_OPTIONS = set().union(*(option_names(c) for c in COMMANDS.values()))


def code_texts(markdown: str) -> list[str]:
    """Shell code blocks as logical lines (continuations joined), and inline code spans."""
    texts = []
    for lang, body in _FENCE.findall(markdown):
        if lang in SHELL_FENCES:
            texts += [line for line in body.replace("\\\n", " ").splitlines() if line.strip()]
    prose = _FENCE.sub("", markdown)
    texts += [" ".join(span.split()) for span in _INLINE.findall(prose)]
    return texts


def _resolve(words: list[str]) -> tuple[str, ...]:
    """The longest command path the words start with (empty: not a command)."""
    path: tuple[str, ...] = ()
    for word in words:
        if (*path, word) not in COMMANDS:
            break
        path = (*path, word)
    return path


def problems(markdown: str, where: str = "doc") -> list[str]:
    """What the docs name that the command line does not have."""
    out = []
    for text in code_texts(markdown):
        text = text.split(" #", 1)[0]  # a shell comment
        starts = [m.end() for m in _MENTION.finditer(text)]
        head = text[:starts[0] - len("sdopt ")] if starts else text
        if not head.strip().startswith(FOREIGN_COMMANDS):
            for option in _OPTION.findall(head):
                if option not in ALL_OPTIONS and option not in FOREIGN_OPTIONS:
                    out.append(f"{where}: `{text}`: {option} is no option of any sdopt command")
        for i, start in enumerate(starts):
            segment = text[start:starts[i + 1] if i + 1 < len(starts) else len(text)]
            path = _resolve(re.findall(r"[\w-]+|\S", segment)[:3])
            if not path:
                continue
            known = option_names(COMMANDS[path])
            for option in _OPTION.findall(segment):
                if option not in known:
                    out.append(f"{where}: `{text}`: sdopt {' '.join(path)} has no option "
                               f"{option}")
    return out


def extras_named(markdown: str) -> set[str]:
    named = set()
    for group in re.findall(r"sdopt\[([^\]]+)\]", markdown):
        named |= {name.strip() for name in group.split(",")}
    named |= set(re.findall(r"`([\w-]+)` extra\b", markdown))
    return named - NOT_EXTRAS


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_option_the_docs_name_exists(doc):
    assert problems(doc.read_text(encoding="utf-8"), doc.name) == []


def test_the_check_catches_a_stale_option():
    doc = ("Run `sdopt compare BASE CUR --force` or\n\n```bash\n"
           "sdopt gate --config sdopt.toml \\\n    --frobnicate   # no such thing\n```\n\n"
           "Inline `--no-such-flag` too; `sdopt baseline save --nope`; `docker run --rm` is "
           "docker's; `sdopt gate --allow-other-machine --set gate.alpha=0.05` is fine.\n")
    found = problems(doc)
    assert len(found) == 4, found
    assert any("sdopt compare has no option --force" in p for p in found)
    assert any("sdopt gate has no option --frobnicate" in p for p in found)
    assert any("--no-such-flag is no option of any sdopt command" in p for p in found)
    assert any("sdopt baseline save has no option --nope" in p for p in found)


def test_the_docs_name_only_real_extras():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = set(pyproject["project"]["optional-dependencies"])
    for doc in DOCS:
        missing = extras_named(doc.read_text(encoding="utf-8")) - extras
        assert not missing, f"{doc.name} names extras pyproject.toml lacks: {sorted(missing)}"
    assert extras_named("pip install 'sdopt[gate]'; the `clip` extra") == {"gate", "clip"}


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "sdopt")
def test_every_command_and_option_has_help(path):
    command = COMMANDS[path]
    assert (command.help or "").strip(), f"sdopt {' '.join(path)} has no help text"
    for param in command.get_params(click.Context(command)):
        if isinstance(param, click.Option):
            assert (param.help or "").strip(), f"sdopt {' '.join(path)} {param.opts[0]}: no help"


def _shape(option: click.Option) -> tuple:
    kind = option.type
    family = ("path" if isinstance(kind, click.Path) else
              "integer" if isinstance(kind, (click.types.IntParamType, click.IntRange)) else
              "float" if isinstance(kind, (click.types.FloatParamType, click.FloatRange)) else
              kind.name)
    return option.is_flag, option.multiple, family


def test_one_option_name_has_one_shape_and_an_envvar_named_after_it():
    shapes: dict[str, dict[tuple, str]] = {}
    for path, command in COMMANDS.items():
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            flag = max(param.opts, key=len)
            # SDOPT_<COMMAND>_<OPTION>: click names the variable after the parameter.
            assert param.name == flag.lstrip("-").replace("-", "_"), (path, flag, param.name)
            shapes.setdefault(flag, {})[_shape(param)] = " ".join(path)
    mixed = {flag: seen for flag, seen in shapes.items() if len(seen) > 1}
    assert not mixed, mixed


def test_options_come_from_the_environment(tmp_path):
    (tmp_path / "sdopt.toml").write_text('model = "tiny"\n')
    missing = tmp_path / "no-results"
    result = CliRunner().invoke(main, ["baseline", "save", "--config", str(tmp_path)],
                                env={"SDOPT_BASELINE_SAVE_RESULTS": str(missing)})
    assert result.exit_code == 2, result.output
    assert str(missing) in result.output and result.output.startswith("error: ")


def test_usage_errors_are_one_line_and_exit_2():
    for args, text in ((["gate", "--force"], "--force was renamed: use --allow-other-machine"),
                       (["init", "--force"], "--force was renamed: use --overwrite"),
                       (["backends", "--device", "tpu"], "--device: 'tpu' is not one of"),
                       (["reproduce", "--gpus", "yes"], "--gpus: 'yes': expected auto, all"),
                       (["reproduce", "--fail-on", "always"], "--fail-on: 'always'"),
                       (["compare", "a", "b", "--set", "runs=5"], "expected SECTION.KEY=VALUE"),
                       (["compare", "a", "b", "--out", "v.json"], "--out is a directory")):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.count("\n") == 1 and result.output.startswith("error: "), \
            (args, result.output)
        assert text in result.output, (args, result.output)


# A repository path in inline code: a known top folder, then path characters (globs and
# placeholders such as tests/action/test_action_*.py or results/NAME.json are not checked).
_REPO_PATH = re.compile(r"^(?:sdopt|docs|examples|benchmarks|tests|templates|action|\.ci)/"
                        r"[A-Za-z0-9_./-]*$")


def missing_paths(markdown: str, root: Path = ROOT) -> list[str]:
    out = []
    for text in _INLINE.findall(markdown):
        text = text.strip()
        if _REPO_PATH.match(text) and not (root / text).exists():
            out.append(text)
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_repository_file_the_docs_name_exists(doc):
    assert missing_paths(doc.read_text(encoding="utf-8")) == []


def test_the_file_check_catches_a_moved_file():
    assert missing_paths("see `sdopt/metrics.py` and `sdopt/optimize/metrics.py`") == \
        ["sdopt/metrics.py"]
