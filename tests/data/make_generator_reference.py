"""Writes generator_reference.json: SHA-256 digests of the tiny MUNIT run's weights (generator,
discriminator) and its loss terms after 3 iterations of the generator loop as it was before the
class-consistency term existed (commit 508df52; the run: tests/generator_reference_setup.py).

tests/test_generator_consistency.py checks that class_consistency_weight=0 trains exactly these
weights. Float sums depend on the CPU's vector unit, so the reference holds one recording per
kind of machine (``machine_key``: the CPU capability torch dispatches to and the CPU model); on
another kind the test compares the loss terms to a recording within float tolerance only. To
record a new kind of machine, run this script on the code of that commit (not on today's: a
recording of the code under test would prove nothing), with the current
``tests/generator_reference_setup.py`` beside it, one thread:

    git worktree add /tmp/before 508df52
    cp tests/generator_reference_setup.py /tmp/before/tests/ && cp tests/data/make_generator_reference.py /tmp/before/tests/data/
    cd /tmp/before && OMP_NUM_THREADS=1 PYTHONPATH=src:tests python tests/data/make_generator_reference.py \
        /work/main/tests/data/generator_reference.json   # adds this machine's entry
"""

import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from generator_reference_setup import ITERATIONS, machine_key, reference_config, weight_digests  # noqa: E402
from invtransfer.train import generator  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["INVTRANSFER_CACHE"] = os.path.join(tmp, "cache")
        run = generator.GeneratorRun(reference_config(tmp))
        if not hasattr(run, "gen"):  # runs set up in run() before the scaffold did it
            run._setup()
        terms = [run.train_step(i) for i in range(ITERATIONS)]
        out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "generator_reference.json")
        ref = {"iterations": ITERATIONS, "torch": torch.__version__, "machines": {}}
        if os.path.isfile(out):
            with open(out, encoding="utf-8") as fh:
                ref = json.load(fh)
            if ref["torch"] != torch.__version__:
                sys.exit(f"{out} was recorded with torch {ref['torch']}, this is {torch.__version__}")
        ref["machines"][machine_key()] = {"weights": weight_digests(run),
                                          "terms": [{k: float(v) for k, v in sorted(t.items())} for t in terms]}
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(ref, fh, indent=1, sort_keys=True)
            fh.write("\n")
        print(f"wrote {out}: {machine_key()}: {len(ref['machines'][machine_key()]['weights'])} tensors after "
              f"{ITERATIONS} iterations")


if __name__ == "__main__":
    main()
