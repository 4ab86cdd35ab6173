"""Train the nuisance generator (MUNIT, docs/design.md#generator) on your own npz and sample a grid of styles.

    python examples/train_generator.py --npz my_lt.npz --out runs/my-generator --iterations 2500

The npz holds uint8 x_train (N, H, W, C; square, side >= 16), int y_train, x_test, y_test,
long-tailed as it is: every training image is used. grid.png shows test images (left column)
and their decodes with random styles (the nuisances the generator learned).
"""

import argparse
import os

import numpy as np
import torch
from PIL import Image

from invtransfer.config import from_dict
from invtransfer.git import load_generator
from invtransfer.train.configs import GeneratorTrainConfig
from invtransfer.train.generator import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--npz", required=True)
    p.add_argument("--out", default="runs/my-generator", help="run directory (replaced)")
    p.add_argument("--iterations", type=int, default=2500, help="2500 x batch 4 = 10k images, the paper's K49 budget")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--width", type=int, default=64, help="MUNIT base width (64: the paper's)")
    p.add_argument("--grid", default="grid.png")
    p.add_argument("--styles", type=int, default=6)
    p.add_argument("--device", default="auto")
    a = p.parse_args()

    counts = np.bincount(np.load(a.npz)["y_train"]).tolist()
    # A preset supplies the defaults; npz_file with profile=list of your class sizes and no
    # validation split takes your training images as they are.
    data = {"name": "cifar10-lt", "npz_file": os.path.abspath(a.npz), "profile": "list", "counts": counts,
            "class_order": "index", "val_per_class": 0}
    small = {"width": a.width, "mlp_dim": 4 * a.width, "disc_width": a.width}
    cfg = from_dict(GeneratorTrainConfig, {
        "data": data, "arch": small, "iterations": a.iterations, "batch_size": a.batch_size, "device": a.device,
        "out_dir": os.path.dirname(os.path.abspath(a.out)), "name": os.path.basename(a.out), "overwrite": True,
        "sample_every": a.iterations, "quiet": True})
    summary = train(cfg)
    print(f"trained {summary['iterations']} iterations ({summary['images_seen']} images) in "
          f"{summary['wall_time_s']:.0f} s")

    gen = load_generator(a.out)  # frozen, on the CPU
    d = np.load(a.npz)
    rows = [int(np.flatnonzero(d["y_test"] == c)[0]) for c in np.unique(d["y_test"])]  # one image per class
    x = torch.from_numpy(d["x_test"][rows].transpose(0, 3, 1, 2)).float() / 255  # [0, 1]
    c = x.shape[1]
    g = torch.Generator().manual_seed(0)
    decodes = [gen(x, [0.0] * c, [1.0] * c, g) for _ in range(a.styles)]  # same normalisation as x
    rows_img = torch.cat([x, *decodes], dim=3)  # (classes, C, H, (1 + styles) * W)
    grid = rows_img.permute(1, 0, 2, 3).reshape(c, -1, rows_img.shape[3])  # classes stacked vertically
    img = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(img[..., 0] if c == 1 else img)
    img.resize((img.width * 4, img.height * 4), Image.NEAREST).save(a.grid)
    print(f"wrote {a.grid}: {len(rows)} classes x (input + {a.styles} styles)")


if __name__ == "__main__":
    main()
