"""``python -m sdopt.cli``: the ``sdopt`` command without its console script (the action and the
tests run it this way, with the interpreter they were started with)."""

from . import main

main(prog_name="sdopt")
