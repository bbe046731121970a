"""The report templates, installed as the package ``sdopt.templates`` (pyproject.toml maps this
folder there).

They live at the top level so that the page and the PR comment can be read and changed without
reading Python; being a package (this file) is what lets importlib find them the same way in a
wheel, a zip and an editable install. ``sdopt report --templates DIR`` searches DIR first.
"""
