"""Sub-commands of ``sdopt`` beyond the core ones in :mod:`sdopt.cli`, one module per topic.

Each module here defines ``register(main: click.Group) -> None``; the CLI finds them with
pkgutil, so adding a command family never touches cli.py.
"""
