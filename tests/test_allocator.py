"""sdopt's CLI processes set glibc's allocator thresholds, unless the user set their own."""

import subprocess
import sys

import pytest

from sdopt import allocator

PROBE = """
import ctypes, sys
import sdopt.allocator as a
calls = []
real = ctypes.CDLL
class Libc:
    def __init__(self, name):
        self._lib = real(name)
    def mallopt(self, param, value):
        calls.append((param, value))
        return self._lib.mallopt(param, value)
ctypes.CDLL = Libc
from sdopt.cli import main
try:
    main(["cache", "info"], standalone_mode=False)
except SystemExit:
    pass
print(sorted(calls))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_cli_sets_the_thresholds_and_leaves_a_users_settings(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "SDOPT_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env=env, check=True).stdout.strip().splitlines()[-1]
    assert out == str(sorted([(-3, allocator.MMAP_THRESHOLD), (-1, allocator.TRIM_THRESHOLD),
                              (-2, allocator.TOP_PAD)]))
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**env, "MALLOC_TOP_PAD_": "0"}, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_users_glibc_settings_win(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert allocator.tune_allocator() == \
        "GLIBC_TUNABLES is set: the user's allocator settings are kept"
