"""Writes generator_reference.json: SHA-256 digests of the tiny MUNIT run's weights (generator,
discriminator) and its loss terms after 3 iterations of the generator loop as it was before the
class-consistency term existed (commit 508df52; the run: tests/generator_reference_setup.py).

tests/test_generator_consistency.py checks that class_consistency_weight=0 trains exactly these
weights. Run from the repository root, one thread (not part of the test suite; it records what
the loop did before the change, so re-running it after the change would prove nothing):

    OMP_NUM_THREADS=1 python tests/data/make_generator_reference.py
"""

import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from generator_reference_setup import ITERATIONS, reference_config, weight_digests  # noqa: E402
from invtransfer.train import generator  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["INVTRANSFER_CACHE"] = os.path.join(tmp, "cache")
        run = generator.GeneratorRun(reference_config(tmp))
        if not hasattr(run, "gen"):  # runs set up in run() before the scaffold did it
            run._setup()
        terms = [run.train_step(i) for i in range(ITERATIONS)]
        out = os.path.join(os.path.dirname(__file__), "generator_reference.json")
        ref = {"iterations": ITERATIONS, "torch": torch.__version__, "weights": weight_digests(run),
               "terms": [{k: float(v) for k, v in sorted(t.items())} for t in terms]}
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(ref, fh, indent=1, sort_keys=True)
            fh.write("\n")
        print(f"wrote {out}: {len(ref['weights'])} tensors after {ITERATIONS} iterations")


if __name__ == "__main__":
    main()
