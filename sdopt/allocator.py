"""glibc's allocator set for sdopt's own processes: torch's CPU activations without page faults.

glibc hands a freed block above its mmap threshold (128 KiB, raised as large blocks are freed, to
32 MiB at most) back to the kernel at once, and trims the heap's free top beyond twice that. A
diffusion pipeline on CPU allocates and frees tensors of tens of MiB in every layer (sd15's VAE
decoder at 256 px makes 33.5 MiB activations), so each is mapped, faulted in and zeroed again on
every call. With a 256 MiB threshold and 1 GiB of free heap kept, they are reused: sd15 at
256 px, 4 steps, fp32 eager, four images in a fresh process took 20.4-26.9 s each with glibc's
defaults (three processes) and 18.1-21.1 s set so (two processes, one with these values through
``mallopt``, one through glibc's environment variables), on 2 Zen 4 cores, 2026-12-03. A search
showed the same gap: the original pipeline made its capture images in 25 s and, once OpenVINO's
builds had grown the heap, its side-by-side images in 18.5 s.

Only the CLI's processes are set (``optimize_model`` in a user's process leaves the user's
allocator alone), and not when the user set glibc's own variables. The cost is memory the process
keeps: up to 1 GiB of freed heap is not returned to the kernel.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 256 * 2**20
TRIM_THRESHOLD = 2**30
TOP_PAD = 64 * 2**20
# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "GLIBC_TUNABLES")


def tune_allocator() -> str | None:
    """Set glibc's thresholds for this process; the reason when it did not."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    user = [name for name in USER_SETTINGS if name in os.environ]
    if user:
        return f"{user[0]} is set: the user's allocator settings are kept"
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return "no glibc mallopt (another C library)"
    for param, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                         (_M_TOP_PAD, TOP_PAD)):
        if mallopt(param, value) != 1:
            return f"mallopt({param}, {value}) failed"
    return None
