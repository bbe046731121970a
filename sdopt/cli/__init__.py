"""The ``sdopt`` command: the group, the one error contract, and the command families.

Each command family lives in its own module (optimize, gate, cache, init, report, reproduce,
merge); this module only assembles them and owns what all commands share:

- bad input of any kind (an SdoptError from anywhere below, or click's own usage errors: an
  unknown option, a value outside a choice) is one line ``error: ...`` on stderr and exit status
  ExitCode.BAD_INPUT, so CI logs and annotations stay readable;
- every option can also be set as ``SDOPT_<COMMAND>_<OPTION>`` (``SDOPT_BASELINE_SAVE_RESULTS``),
  click's ``auto_envvar_prefix``; options are named after their flag so the variable is too.
"""

from __future__ import annotations

import os

import click

from ..allocator import tune_allocator
from ..errors import ExitCode, SdoptError
from ..logs import silence_torchvision_notes
from . import cache, gate, init, merge, optimize, report, reproduce

# transformers warns on import about optional image processors a text-to-image run never uses.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ENVVAR_PREFIX = "SDOPT"

# Options that were renamed when one name got one meaning; a script still using the old name is
# told what replaced it instead of only "no such option".
RENAMED_OPTIONS = {
    ("compare", "--force"): "--allow-other-machine",
    ("gate", "--force"): "--allow-other-machine",
    ("init", "--force"): "--overwrite",
}


class OneLineError(click.ClickException):
    """Shown as ``error: MESSAGE`` alone: no usage block, no traceback."""

    def __init__(self, message: str, exit_code: int = ExitCode.BAD_INPUT):
        super().__init__(" ".join(message.split()))
        self.exit_code = int(exit_code)

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def _flag(param: click.Parameter) -> str:
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return param.human_readable_name


def _usage_line(exc: click.ClickException) -> str:
    """Click's usage errors as one line that names the option and what it expects."""
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.NoSuchOption) and ctx is not None:
        new = RENAMED_OPTIONS.get((ctx.info_name, exc.option_name))
        if new:
            return f"{exc.option_name} was renamed: use {new}"
    if isinstance(exc, click.BadParameter) and not isinstance(exc, click.MissingParameter) \
            and exc.param is not None:
        line = f"{_flag(exc.param)}: {exc.message}"
    else:
        line = exc.format_message()
    line = line.rstrip(".")
    if line.split(" ", 1)[0].istitle():  # "Missing option ...", not "PRESET: ..."
        line = line[:1].lower() + line[1:]
    if isinstance(exc, click.UsageError) and ctx is not None:
        line += f" (see '{ctx.command_path} --help')"
    return line


class SdoptGroup(click.Group):
    """The root group: turns every user error into one :class:`OneLineError`."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except OneLineError:
            raise
        except click.ClickException as exc:
            raise OneLineError(_usage_line(exc)) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OneLineError:
            raise
        except SdoptError as exc:
            raise OneLineError(str(exc), exc.exit_code) from None
        except click.ClickException as exc:
            raise OneLineError(_usage_line(exc)) from None
        except click.Abort:
            raise OneLineError("aborted") from None


@click.group(cls=SdoptGroup, context_settings={"auto_envvar_prefix": ENVVAR_PREFIX})
# SDOPT_VERSION is a likely name for a CI variable: it must not turn every command into --version.
@click.version_option(package_name="sdopt", allow_from_autoenv=False,
                      help="Print sdopt's version and exit.")
def main() -> None:
    """Make Stable Diffusion inference fast, and keep it fast.

    Exit status: 0 pass, 1 regression, 2 bad input, 3 not comparable. Every option can also be
    set as SDOPT_<COMMAND>_<OPTION>, e.g. SDOPT_BENCH_QUIET=1 or SDOPT_BASELINE_SAVE_RESULTS=DIR.
    """
    # The process is sdopt's: torchvision notes (sdopt does not use torchvision) never print,
    # and torch's CPU activations are not faulted in again on every call (sdopt.allocator).
    silence_torchvision_notes()
    tune_allocator()


COMMANDS = (optimize.optimize, optimize.demo, optimize.backends, optimize.models, gate.bench,
            gate.baseline, gate.compare, gate.gate, gate.history, cache.cache, init.init,
            merge.merge, report.report, reproduce.reproduce)
for _command in COMMANDS:
    main.add_command(_command)
