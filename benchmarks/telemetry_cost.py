"""What OpenVINO's usage telemetry costs a conversion: sd15's text encoder and VAE decoder
converted with ``openvino.convert_model``, consent on and off in alternation, in one process.

sdopt declines the telemetry where no consent file exists (``sdopt/privacy.py``); ovc itself only
turns it off under ``CI=true``. The sandbox has no route to Google Analytics, which is what a
user's machine without network (or behind a firewall) sees too.

    python benchmarks/telemetry_cost.py --out benchmarks/results/telemetry_cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from search_cold import cpu_kind  # this folder: scripts run as python benchmarks/NAME.py


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import openvino as ov
    import openvino_telemetry as tm
    import torch

    import sdopt

    pipe = sdopt.build_preset("sd15")

    class Decoder(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, z):
            return self.vae.decode(z, return_dict=False)[0]

    ids, z = torch.zeros(1, 77, dtype=torch.long), torch.zeros(1, 4, 32, 32)
    jobs = {"text_encoder": lambda: ov.convert_model(pipe.text_encoder, example_input=ids),
            "vae_decoder": lambda: ov.convert_model(Decoder(pipe.vae).eval(), example_input=z)}
    jobs["text_encoder"]()  # loads the libraries and configures the telemetry singleton
    telemetry = tm.Telemetry()
    seconds = {name: {"on": [], "off": []} for name in jobs}
    for r in range(args.rounds):
        for name, job in jobs.items():
            for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
                telemetry.consent = mode == "on"
                t0 = time.perf_counter()
                job()
                seconds[name][mode].append(time.perf_counter() - t0)
    telemetry.consent = False
    rows = {name: {**s, "median_on_s": statistics.median(s["on"]),
                   "median_off_s": statistics.median(s["off"]),
                   "extra_s": statistics.median([a - b for a, b in zip(s["on"], s["off"])])}
            for name, s in seconds.items()}
    for name, row in rows.items():
        print(f"{name}: {row['median_on_s']:.2f} s with telemetry, {row['median_off_s']:.2f} s "
              f"without (+{row['extra_s']:.2f} s per conversion, paired)")
    if args.out:
        Path(args.out).write_text(json.dumps({"what": __doc__.splitlines()[0], "cpu": cpu_kind(),
                                              "openvino": ov.get_version(), "rows": rows},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
