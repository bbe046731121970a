"""The sdopt.toml of the tests that run a real gate on the tiny model: one prompt, two steps,
only the optimized variant, so an end-to-end run takes seconds."""


def tiny_config(*, runs: int = 5, candidate: str | None = None, tail: str = "") -> str:
    """The config text; ``candidate`` skips the search, ``tail`` adds sections."""
    text = ('model = "tiny"\n\n[bench]\nprompts = ["a photo of a cat"]\nseeds = [0]\nsteps = 2\n'
            f'runs = {runs}\nwarmup = 1\nvariants = ["optimized"]\n')
    if candidate:
        text += f'\n[optimize]\ncandidate = "{candidate}"\n'
    return text + (f"\n{tail}" if tail else "")
