"""Writes git_engine_reference.npz: GIT batches of the classifier engine as it was before the
public mixer (invtransfer.git) took over its batch mixing (engine of commit ac3b800).

tests/test_git_api.py checks that today's engine, and the public mixer composed as the engine
composes it, give these same batches. Run from the repository root (it is not part of the test
suite; it records what the old engine did, so re-running it after the change would prove nothing):

    python tests/data/make_git_reference.py
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from git_reference_setup import reference_run  # noqa: E402


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run, epoch = reference_run(tmp)
        run._setup()
        g = torch.Generator().manual_seed(0)
        idx, idx2 = torch.randperm(len(run.y_train), generator=g), torch.randperm(len(run.y_train), generator=g)
        steps = []
        for step in range(-(-len(idx) // 16)):  # the last batch is shorter (72 = 4 x 16 + 8)
            bidx, bidx2 = idx[step * 16:(step + 1) * 16], idx2[step * 16:(step + 1) * 16]
            plan = run.plan_batch(bidx, epoch, step, bidx2)
            x, y = run.materialize(plan)
            steps.append({"bidx": bidx, "bidx2": bidx2, "gen_slots": plan.gen_slots, "gen_index": plan.gen_index,
                          "gen_styles": plan.gen_styles if plan.gen_styles is not None else torch.zeros(0),
                          "labels": plan.labels, "x": x, "y": y})
        # npz, not .pt: checkpoints are git-ignored; arrays are named <field>_<step>
        out = os.path.join(os.path.dirname(__file__), "git_engine_reference.npz")
        np.savez_compressed(out, epoch=epoch, steps=len(steps),
                            **{f"{k}_{i}": v.numpy() for i, s in enumerate(steps) for k, v in s.items()})
        print(f"wrote {out}: {sum(len(s['gen_slots']) for s in steps)} generated rows in {len(steps)} batches")


if __name__ == "__main__":
    main()
