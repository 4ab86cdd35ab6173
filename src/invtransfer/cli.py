"""Command-line interface: parse arguments, load a config, call one library function, print.

Every user-facing error is an :class:`InvTransferError`; ``main`` prints its message and exits
with status 2 (no traceback). Interrupts exit with 130 after the called function has saved
what it needs to.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Sequence

from invtransfer.config import dump_yaml, from_dict, parse_overrides
from invtransfer.errors import InvTransferError


def _kv(args: Sequence[str]) -> dict:
    return parse_overrides(list(args))


def _int_flag(flag: str, minimum: int):
    """An argparse ``type`` for an integer flag >= ``minimum``: held to the standard of config keys
    (``--draws -3`` used to write a meaningless eKLD, ``--draws 0`` to raise a traceback)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise InvTransferError(f"{flag} must be an integer >= {minimum}, got {text!r}.") from None
        if value < minimum:
            raise InvTransferError(f"{flag} must be >= {minimum}, got {value}.")
        return value
    return parse


def _progress(a: argparse.Namespace, message: str) -> None:
    """A status line on an interactive stderr (never in logs or captured output), unless --quiet."""
    if not getattr(a, "quiet", False) and sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)


def _bars(a: argparse.Namespace) -> bool:
    """Progress bars (tqdm, stderr) for evaluate, invariance and generator-quality: on an
    interactive stderr unless --quiet, like the status line."""
    return not getattr(a, "quiet", False) and sys.stderr.isatty()


def _data_options(name: str, overrides: Sequence[str]) -> dict:
    """Dataset options: the preset NAME (positional) and its key=value overrides."""
    kv = _kv(overrides)
    if "name" in kv and kv["name"] != name:
        raise InvTransferError(f"dataset option name={kv['name']!r} contradicts the dataset {name!r} given as "
                               f"argument; the preset is the argument, drop name=.")
    return dict(kv, name=name)


def _split_config(config: str | None, overrides: Sequence[str]) -> tuple[str | None, list[str]]:
    """The optional CONFIG positional swallows the first key=value when no YAML is given."""
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config, *overrides]
    return config, list(overrides)


def cmd_data(a: argparse.Namespace) -> int:
    from invtransfer.data import datasets

    if a.name == "download":
        return cmd_download(a)
    cfg = from_dict(datasets.DatasetConfig, _data_options(a.name, a.overrides))
    cfg = datasets.resolve(cfg)
    if a.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    ds = datasets.build_dataset(cfg)
    info = ds.info()
    if a.preview:
        datasets.preview(ds, a.preview)
        info["preview"] = a.preview
    for w in ds.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if a.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"dataset      {info['name']}  (fingerprint {info['fingerprint']})")
    print(f"image shape  {tuple(info['image_shape'])} (C, H, W); nuisance: {info['nuisance']}")
    print(f"train        {info['train_size']} images; imbalance ratio {info['imbalance_ratio']:.1f}")
    print(f"val / test   {info['val_size']} / {info['test_size']} images")
    print("class sizes  (class index order)")
    for i, (name, n) in enumerate(zip(info["class_names"], info["train_class_counts"])):
        print(f"  {i:4d}  {name:<24s} {n:6d}")
    print("sources      " + "\n             ".join(info["sources"]))
    if a.preview:
        print(f"preview      {a.preview}")
    return 0


def cmd_download(a: argparse.Namespace) -> int:
    from invtransfer.data import download, formats

    if not a.overrides:
        raise InvTransferError("usage: invtransfer data download NAME [data_root=FOLDER]; NAME is one of "
                               f"{', '.join(download.DOWNLOADABLE)}.")
    name, rest = a.overrides[0], _kv(a.overrides[1:])
    unknown = set(rest) - {"data_root", "base_url", "force"}
    if unknown:
        raise InvTransferError(f"unknown option {sorted(unknown)[0]!r} for data download; "
                               f"known: data_root, base_url, force.")
    force = rest.get("force", False)
    if not isinstance(force, bool):  # bool("maybe") would silently fetch everything again
        raise InvTransferError(f"option 'force' of data download: got {force!r}, expected true or false.")
    root = rest.get("data_root") or (formats.data_roots(None, name) or ["data"])[0]
    paths = download.download(name, str(root), base_url=rest.get("base_url"), force=force)
    for p in paths:
        print(p)
    return 0


def _train(a: argparse.Namespace, config_cls: type, train) -> int:
    """Load CONFIG + key=value overrides into ``config_cls``; print it or ``train`` it."""
    from invtransfer.config import load_config

    config, overrides = _split_config(a.config, a.overrides)
    if a.quiet:  # --quiet, as on every command, is the config key quiet=true
        overrides.append("quiet=true")
    cfg = load_config(config_cls, config, overrides)
    if a.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    train(cfg)
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from invtransfer.train import classifier

    return _train(a, classifier.TrainConfig, classifier.train)


def cmd_evaluate(a: argparse.Namespace) -> int:
    from invtransfer.train import classifier

    _progress(a, f"evaluating {a.checkpoint} on its {a.split} split ...")
    m = classifier.evaluate_checkpoint(a.checkpoint, split=a.split, device=a.device, batch_size=a.batch_size,
                                       progress=_bars(a))
    if a.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"{m['dataset']} {a.split}: error {m['error']:.2f}%  balanced accuracy {m['balanced_accuracy']:.2f}%")
    for group in ("many", "medium", "few"):
        v = m[f"{group}_shot_accuracy"]
        print(f"  {group:>6}-shot accuracy: {'empty' if v is None else f'{v:.2f}%'} "
              f"({m['shot_group_sizes'][group]} classes)")
    return 0


def cmd_train_generator(a: argparse.Namespace) -> int:
    from invtransfer.train import generator

    return _train(a, generator.GeneratorTrainConfig, generator.train)


def _dataset_config(name: str, overrides: Sequence[str]):
    from invtransfer.data import datasets

    return from_dict(datasets.DatasetConfig, _data_options(name, overrides))


def cmd_sample(a: argparse.Namespace) -> int:
    import os

    from invtransfer.data import datasets
    from invtransfer.fileio import atomic_write_bytes
    from invtransfer.plots import labelled_grid_png
    from invtransfer.train import classifier, generator

    gen, _ = generator.load_generator(a.generator, classifier.resolve_device(a.device))
    ds = datasets.build_dataset(_dataset_config(a.dataset, a.overrides))
    generator.check_compatible(gen, ds.image_shape, f"dataset {ds.name!r}")
    images, rows = generator.grid_sources(ds)
    scale = max(1, 64 // images.shape[1])  # small images enlarged to readable cells, as in training's grids
    grid = generator.sample_grid(gen, images, generator.grid_styles(gen.style_dim, a.n, a.seed), scale=scale)
    cols = ["real", "recon."] + [f"style {i + 1}" for i in range(a.n)]
    atomic_write_bytes(a.out, labelled_grid_png(grid, rows, cols, cell=(images.shape[1] * scale,
                                                                         images.shape[2] * scale),
                                                title=f"{os.path.basename(os.path.normpath(a.generator))} on "
                                                      f"{ds.name}, style seed {a.seed}"))
    print(a.out)
    return 0


def cmd_generator_quality(a: argparse.Namespace) -> int:
    from invtransfer.metrics.generator_quality import generator_quality

    _progress(a, f"measuring {a.generator} on {a.dataset}: {a.n_per_class} images per class x {a.styles} styles ...")
    q = generator_quality(a.generator, _dataset_config(a.dataset, a.overrides), classifier_path=a.classifier,
                          n_per_class=a.n_per_class, styles=a.styles, seed=a.seed, device=a.device,
                          progress=_bars(a))
    if a.json:
        print(json.dumps(q, indent=2))
        return 0
    print(f"generator {q['generator']} ({q['generator_iterations']} iterations) on {q['dataset']} val: "
          f"{q['n_images']} images x {q['styles']} styles")
    print(f"reconstruction L1 ([-1, 1] units)  {q['reconstruction_l1']:.4f}")
    d = q["diversity"]
    if d is None:
        print("nuisance diversity                no synthetic nuisance in this dataset")
    else:
        ratio = "n/a" if d["ratio"] is None else f"{d['ratio']:.3f}"
        print(f"nuisance diversity ({d['statistic']})       generated {d['generated_std']:.3f}  "
              f"true {d['true_std']:.3f}  ratio {ratio}")
        print(f"  statistic: {d['description']}")
    p = q["class_preservation"]
    if p is None:
        print(q["note"])
    else:
        true = "n/a" if p["true_transform_accuracy"] is None else f"{p['true_transform_accuracy']:.2f}%"
        diff = "n/a" if p["difference"] is None else f"{p['difference']:+.2f}"
        print(f"class preservation                generated {p['generated_accuracy']:.2f}%  true transform {true}  "
              f"difference {diff}  (untouched inputs {p['input_accuracy']:.2f}%)")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from invtransfer import demo

    demo.run_demo(a.out, data=_kv(a.overrides), quiet=a.quiet, epochs=a.epochs,
                  generator_iterations=a.generator_iterations, draws=a.draws)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from invtransfer.report import write_report

    print(write_report(a.runs, a.out, title=a.title))
    return 0


def cmd_invariance(a: argparse.Namespace) -> int:
    import os

    from invtransfer.data.datasets import atomic_write_bytes
    from invtransfer.metrics import invariance
    from invtransfer.train.classifier import load_classifier
    from invtransfer.train.inference import same_weights_under_both_policies

    results, labels = [], []
    for i, ck in enumerate(a.checkpoints, 1):
        if a.weights == "other" and (epoch := same_weights_under_both_policies(ck)) is not None:
            _progress(a, f"[{i}/{len(a.checkpoints)}] {ck}: both selection policies keep the weights of epoch "
                         f"{epoch} (the best validation epoch is the last), so its invariance.json holds them; "
                         f"nothing to measure.")
            continue
        _progress(a, f"[{i}/{len(a.checkpoints)}] eKLD of {ck} ({a.weights} weights): {a.draws} draws x "
                     f"{a.images_per_class} images per class on the {a.split} split ...")
        transform = a.transform
        if transform is None:
            _, meta = load_classifier(ck)
            transform = meta.get("nuisance")
            if transform in (None, "none"):
                raise InvTransferError(f"{ck}: its dataset ({meta['config']['data']['name']}) has no known synthetic "
                                       f"transform; pass --transform rot|bg|dil or --transform generator:PATH.")
        res = invariance.measure_checkpoint(ck, transform, split=a.split, images_per_class=a.images_per_class,
                                            draws=a.draws, seed=a.seed, device=a.device,
                                            allow_other_dataset=a.allow_other_dataset, progress=_bars(a),
                                            weights=a.weights)
        run_dir = os.path.dirname(res["checkpoint"])
        if not a.no_save:
            # one policy's weights asked for by name: a file of their own, beside the selected ones'
            name = "invariance.json" if a.weights == "selected" else f"invariance_{res['weights']['which']}.json"
            atomic_write_bytes(os.path.join(run_dir, name), (json.dumps(res, indent=2) + "\n").encode())
        results.append(res)
        labels.append(os.path.basename(run_dir))
    if a.plot and results:
        invariance.plot_ekld(results, labels, a.plot)
    if a.json:
        print(json.dumps({"results": results}, indent=2))
        return 0
    for res, label in zip(results, labels):
        rho, pval = res["spearman_rho"], res["spearman_p"]
        trend = "undefined" if rho is None else f"{rho:+.3f} (p={pval:.3g})"
        print(f"{label}: transform {res['transform']}, {res['draws']} draws x {res['images_per_class']} images/class "
              f"on {res['split']}; Spearman(eKLD, class size) = {trend}; "
              f"mean eKLD of smallest third {res['mean_ekld_smallest_third']:.4f}")
        print("  class  size    eKLD   consistency")
        for p in sorted(res["per_class"], key=lambda p: -p["class_size"]):
            print(f"  {p['class']:5d} {p['class_size']:5d} {p['ekld']:8.4f}   {p['consistency']:.3f}")
    if a.plot:
        print(f"plot: {a.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from invtransfer import __version__, demo

    p = argparse.ArgumentParser(prog="invtransfer", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"invtransfer {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    devices = ("auto", "cpu", "cuda", "mps")
    device_help = "where to compute: auto (CUDA, then MPS, then CPU), cpu, cuda or mps (default auto)"
    quiet_help = "no progress output"

    d = sub.add_parser("data", help="build and describe a long-tailed dataset (or: data download NAME)",
                       description="Build a dataset preset and print its class sizes. "
                                   "`invtransfer data download NAME [data_root=DIR]` fetches source files.")
    d.add_argument("name", help="dataset preset, e.g. cifar10-lt, fmnist-dil-lt, gtsrb-lt; or 'download'")
    d.add_argument("overrides", nargs="*", help="dataset options as key=value (instance=2, data_root=DIR, "
                                                "npz_file=FILE, ...)")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.add_argument("--preview", metavar="FILE.png", help="also write a preview grid (one row per class)")
    d.add_argument("--print-config", action="store_true", help="print the resolved dataset options and exit")
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("train", help="train a classifier (CE, focal, LDAM, balanced softmax; ERM, DRS, DRW, ...)")
    t.add_argument("config", nargs="?", help="YAML config (e.g. configs/cifar10_lt/ce_drs.yaml); omit for defaults")
    t.add_argument("overrides", nargs="*", help="key=value overrides, dotted for nested keys (optim.lr=0.05)")
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    t.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars (= quiet=true)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a trained classifier on its dataset's val or test split")
    e.add_argument("checkpoint", help="run directory, model.pt or checkpoint.pt")
    e.add_argument("--split", choices=("val", "test"), default="test", help="which split (default test)")
    e.add_argument("--device", default="auto", choices=devices, help=device_help)
    e.add_argument("--batch-size", type=_int_flag("--batch-size", 1), default=1024, metavar="N",
                   help="images per forward pass (default 1024; lower it after an out-of-memory error)")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument("--quiet", action="store_true", help=quiet_help)
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser("train-generator", help="train the MUNIT generative model on a long-tailed training set")
    g.add_argument("config", nargs="?", help="YAML config (e.g. configs/generator/fmnist_munit.yaml); omit for "
                                             "defaults")
    g.add_argument("overrides", nargs="*", help="key=value overrides, dotted for nested keys (arch.width=32)")
    g.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    g.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar (= quiet=true)")
    g.set_defaults(func=cmd_train_generator)

    s = sub.add_parser("sample", help="write a grid of random-style samples of a trained generator",
                       description="One row per class (its first val image): real, reconstruction, N random styles; "
                                   "rows and columns labelled.")
    s.add_argument("generator", help="generator run directory, generator.pt or state.pt")
    s.add_argument("dataset", help="dataset preset, e.g. fmnist-bg-lt")
    s.add_argument("overrides", nargs="*", help="dataset options as key=value (instance=1, data_root=DIR, ...)")
    s.add_argument("--out", default="samples.png", help="PNG to write (default samples.png)")
    s.add_argument("--n", type=_int_flag("--n", 1), default=8, metavar="N", help="random styles per image (default 8)")
    s.add_argument("--seed", type=_int_flag("--seed", 0), default=0, help="seed of the styles (default 0)")
    s.add_argument("--device", default="auto", choices=devices, help=device_help)
    s.set_defaults(func=cmd_sample)

    q = sub.add_parser("generator-quality", help="class preservation, nuisance diversity and reconstruction of a "
                                                 "generator on held-out images")
    q.add_argument("generator", help="generator run directory, generator.pt or state.pt")
    q.add_argument("dataset", help="dataset preset with a synthetic nuisance, e.g. fmnist-bg-lt")
    q.add_argument("overrides", nargs="*", help="dataset options as key=value (instance=1, data_root=DIR, ...)")
    q.add_argument("--classifier", metavar="RUN", help="classifier run (invtransfer train) on untransformed data of "
                                                       "the same base dataset; without it class preservation is "
                                                       "skipped")
    q.add_argument("--n-per-class", type=_int_flag("--n-per-class", 1), default=20, metavar="N",
                   help="held-out images per class (default 20)")
    q.add_argument("--styles", type=_int_flag("--styles", 1), default=8, metavar="N",
                   help="draws per image (default 8)")
    q.add_argument("--seed", type=_int_flag("--seed", 0), default=0, help="seed of the draws (default 0)")
    q.add_argument("--device", default="auto", choices=devices, help=device_help)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--quiet", action="store_true", help=quiet_help)
    q.set_defaults(func=cmd_generator_quality)

    m = sub.add_parser("demo", help="the whole GIT pipeline on Fashion-MNIST-DIL-LT at a CPU-sized budget")
    m.add_argument("overrides", nargs="*", help="dataset options as key=value (data_root=DIR, instance=1, ...)")
    m.add_argument("--out", default="runs/demo", help="output folder, replaced (default runs/demo)")
    m.add_argument("--epochs", type=_int_flag("--epochs", 3), default=demo.DEMO_EPOCHS, metavar="N",
                   help=f"epochs per classifier run, at least 3 (default {demo.DEMO_EPOCHS}; the schedule's "
                        f"E1 and E2 scale with it)")
    m.add_argument("--generator-iterations", type=_int_flag("--generator-iterations", 1),
                   default=demo.DEMO_GENERATOR_ITERATIONS, metavar="N",
                   help=f"generator training iterations (default {demo.DEMO_GENERATOR_ITERATIONS})")
    m.add_argument("--draws", type=_int_flag("--draws", 1), default=demo.DEMO_DRAWS, metavar="N",
                   help=f"eKLD draws per image (default {demo.DEMO_DRAWS})")
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    m.set_defaults(func=cmd_demo)

    v = sub.add_parser("invariance", help="per-class eKLD and consistency of trained classifiers")
    v.add_argument("checkpoints", nargs="+", help="classifier run directories or checkpoint files")
    v.add_argument("--transform", default=None,
                   help="rot, bg, dil or generator:PATH (default: the dataset's own nuisance)")
    v.add_argument("--split", choices=("val", "test"), default="test", help="held-out split (default test)")
    v.add_argument("--images-per-class", type=_int_flag("--images-per-class", 1), default=40, metavar="N",
                   help="held-out images per class (default 40)")
    v.add_argument("--draws", type=_int_flag("--draws", 1), default=100, metavar="N",
                   help="transformed copies of each image (default 100)")
    v.add_argument("--seed", type=_int_flag("--seed", 0), default=0, help="seed of the transform draws (default 0)")
    v.add_argument("--device", default="auto", choices=devices, help=device_help)
    v.add_argument("--json", action="store_true", help="print JSON")
    v.add_argument("--plot", metavar="FILE.png", help="eKLD against class size, all checkpoints overlaid")
    v.add_argument("--no-save", action="store_true", help="do not write invariance.json into the run directory")
    v.add_argument("--weights", choices=("selected", "best_val", "last", "other"), default="selected",
                   help="which weights of each run: its selected ones (invariance.json), or one selection policy's "
                        "from its checkpoint.pt, written to invariance_best_val.json / invariance_last.json; "
                        "other: the policy the run did not select (skipped where both keep the same epoch); default selected")
    v.add_argument("--allow-other-dataset", action="store_true",
                   help="accept a generator:PATH trained on another dataset, nuisance or instance than the "
                        "classifier (a deliberate transfer; refused otherwise)")
    v.add_argument("--quiet", action="store_true", help=quiet_help)
    v.set_defaults(func=cmd_invariance)

    r = sub.add_parser("report", help="markdown report (tables and plots) from run directories")
    r.add_argument("runs", nargs="+", help="run directories or folders of runs (each run counted once)")
    r.add_argument("--out", default="report", help="output folder (default report)")
    r.add_argument("--title", default="invtransfer report", help="heading of report.md (default 'invtransfer "
                                                                 "report')")
    r.set_defaults(func=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        a = parser.parse_args(argv)  # inside: a flag's value check raises InvTransferError
        return int(a.func(a) or 0)
    except InvTransferError as e:
        if hasattr(e, "signum"):
            print(f"{e}", file=sys.stderr)
            return 128 + int(e.signum)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except OSError as e:  # a file operation the library does not wrap (disk full, permissions, ...)
        why = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e) or type(e).__name__)
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {why}{where}.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
