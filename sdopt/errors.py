"""User-facing errors.

Every problem caused by what the user gave us (a path, a prompt list, a threshold, a saved model)
is raised as :class:`SdoptError` with a one-line message that names the bad value and says what is
expected; the CLI prints it without a traceback and exits with status 2.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The exit status of every sdopt command and of the GitHub Action: the contract CI scripts
    rely on, defined here once (docs/gate.md documents it)."""

    PASS = 0
    REGRESSION = 1
    BAD_INPUT = 2
    NOT_COMPARABLE = 3


class SdoptError(Exception):
    """A problem with user input, reported as one line (CLI exit status 2)."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, message: str):
        # A multi-line message would break the one-line contract of the CLI and of CI annotations.
        super().__init__(" ".join(str(message).split()))


class DiskFullError(SdoptError):
    """The disk filled while sdopt wrote an output or a cache entry: what was written is removed
    again (the atomic write's temporary copy) and the message says how much room there is."""


class MissingDependencyError(SdoptError):
    """An optional dependency is not installed; the message says how to install it (the hint
    comes from :mod:`sdopt.deps`, which knows the extra that provides each package)."""

    def __init__(self, package: str, purpose: str, hint: str):
        super().__init__(f"{purpose} needs the Python package '{package}', which is not "
                         f"installed: {hint}")
        self.package = package
