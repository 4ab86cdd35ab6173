"""eKLD per class of a checkpointed model under rotation, and its trend with class size.

    python examples/measure_ekld.py --checkpoint model.pt --npz my_lt.npz --plot ekld.png

Here the model is examples/train_with_git.py's; load yours the same way. eKLD_c is the mean
KL divergence between the softmax on a test image of class c and on a rotated copy of it
(docs/design.md#measurement): larger on small classes means the invariance did not transfer to them.
"""

import argparse
import json

import numpy as np
import torch

from invtransfer.invariance import ekld, plot_ekld_vs_class_size
from train_with_git import SmallResNet  # your architecture


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--npz", required=True, help="held-out images: x_test (N, H, W, C uint8), y_test")
    p.add_argument("--transform", default="rot", help="rot, bg, dil or generator:PATH")
    p.add_argument("--images-per-class", type=int, default=40)
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--plot", default=None, help="eKLD against class size (PNG)")
    p.add_argument("--json", default=None, help="write the result as JSON")
    a = p.parse_args()

    ck = torch.load(a.checkpoint, weights_only=True)
    d = np.load(a.npz)
    x, y = d["x_test"].transpose(0, 3, 1, 2), d["y_test"]  # uint8 (N, C, H, W): pixels 0..255
    model = SmallResNet(x.shape[1], len(ck["class_counts"]), ck["width"])
    model.load_state_dict(ck["model"])
    mean, std = torch.tensor(ck["mean"]).view(1, -1, 1, 1), torch.tensor(ck["std"]).view(1, -1, 1, 1)

    res = ekld(model, x, y, a.transform, normalize=lambda t: (t / 255 - mean) / std,  # t: float pixels 0..255
               class_sizes=ck["class_counts"], images_per_class=a.images_per_class, draws=a.draws)
    print(f"{'class':>5} {'train n':>8} {'eKLD':>8} {'consistency':>11}")
    for r in res["per_class"]:
        print(f"{r['class']:>5} {r['class_size']:>8} {r['ekld']:>8.4f} {r['consistency']:>11.3f}")
    rho = res["spearman_rho"]
    print(f"mean eKLD {res['mean_ekld']:.4f}, smallest third {res['mean_ekld_smallest_third']:.4f}, "
          f"Spearman(eKLD, class size) {'undefined' if rho is None else f'{rho:+.2f}'}")
    if a.plot:
        plot_ekld_vs_class_size(res, [a.checkpoint], path=a.plot)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
