"""The sdopt GitHub Action's entrypoint (``python -m action``).

It runs inside the sdopt container (see ``Dockerfile`` and ``action.yml``) and drives the ``sdopt``
command line, so what the action does in CI is exactly what ``docker run`` of the same image does
on a laptop. Modules: ``inputs`` (INPUT_* variables), ``event`` (the event payload and the pull
request it concerns), ``workflow`` (outputs, job summary, annotations, masking), ``comment`` (PR
comment upsert through the REST API), ``main`` (the modes). File names, verdicts, exit codes
and the report come from sdopt itself: the action keeps no copy of them.
"""
