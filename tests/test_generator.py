"""The MUNIT training loop, generator loading and nuisance sampling (quality metrics:
test_generator_quality.py; the CLI commands: test_cli.py)."""

import json
import os
import signal
import time

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from conftest import make_images, tiny_data_overrides
from invtransfer.config import from_dict, load_config
from invtransfer.data import batches, datasets
from invtransfer.data.datasets import DatasetConfig
from invtransfer.errors import InvTransferError
from invtransfer.metrics import generator_quality
from invtransfer.train import classifier, generator
from invtransfer.train.checkpoint import TrainingInterrupted, atomic_save, load_checkpoint

TINY_ARCH = {"width": 8, "n_res": 1, "mlp_dim": 16, "disc_width": 8}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convs run faster on one thread, and far faster when other jobs share the cores
    (OpenMP workers then wait for each other on every op)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_npz(path, size):
    """4 classes of grey size x size images with a zero background (60 train / 10 test per class)."""
    x_train, y_train = make_images(60, size=size, seed=1)
    x_test, y_test = make_images(10, size=size, seed=2)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             class_names=np.array(["a", "b", "c", "d"]))
    return path


@pytest.fixture
def npz16(tmp_path):
    return write_npz(tmp_path / "tiny16.npz", 16)


def data_dict(npz, **extra):
    return tiny_data_overrides(npz, name="fmnist-bg-lt", **extra)


def tiny_cfg(npz, out_dir, **kw):
    d = {"data": data_dict(npz), "arch": dict(TINY_ARCH), "iterations": 4, "batch_size": 4, "device": "cpu",
         "out_dir": str(out_dir), "name": "gen", "quiet": True, "checkpoint_every": 2, "sample_every": 2,
         "log_every": 2}
    d.update(kw)
    return from_dict(generator.GeneratorTrainConfig, d)


def test_learning_rate_halves_every_lr_step():
    cfg = from_dict(generator.GeneratorTrainConfig, {"lr_step": 10, "lr": 1e-4})
    assert [generator.learning_rate(cfg, i) for i in (0, 9, 10, 25)] == pytest.approx([1e-4, 1e-4, 5e-5, 2.5e-5])


# Distinct non-default loss weights: a weight applied to the wrong term changes the total.
ODD_WEIGHTS = {"gan_weight": 0.7, "recon_x_weight": 3.0, "recon_s_weight": 0.3, "recon_c_weight": 2.0,
               "recon_cycle_weight": 1.5}
WEIGHT_OF = {"loss_adv": "gan_weight", "loss_recon_x": "recon_x_weight", "loss_recon_s": "recon_s_weight",
             "loss_recon_c": "recon_c_weight", "loss_recon_cycle": "recon_cycle_weight"}


def test_one_iteration_changes_weights_and_keeps_losses_finite(npz16, tmp_path):
    run = generator.GeneratorRun(tiny_cfg(npz16, tmp_path, **ODD_WEIGHTS))
    before_g = {k: v.clone() for k, v in run.gen.state_dict().items()}
    before_d = {k: v.clone() for k, v in run.disc.state_dict().items()}
    terms = run.train_step(0)
    assert set(terms) == set(generator.LOSS_KEYS)
    assert all(torch.isfinite(v) for v in terms.values())
    # the generator's objective is the weighted sum of the logged terms, each with its own weight
    weighted = {k: ODD_WEIGHTS[w] * float(terms[k]) for k, w in WEIGHT_OF.items()}
    assert float(terms["loss_g"]) == pytest.approx(sum(weighted.values()), rel=1e-5)
    assert min(float(terms[k]) for k in WEIGHT_OF) > 1e-3  # every term counts, so a swap would show
    for a in WEIGHT_OF:  # swapping any two weights moves the total by more than the tolerance
        for b in WEIGHT_OF:
            if a < b:
                swapped = sum(weighted.values()) - weighted[a] - weighted[b] \
                    + ODD_WEIGHTS[WEIGHT_OF[b]] * float(terms[a]) + ODD_WEIGHTS[WEIGHT_OF[a]] * float(terms[b])
                assert float(terms["loss_g"]) != pytest.approx(swapped, rel=1e-4), (a, b)
    assert terms["loss_recon_x"] > 0 and terms["loss_d"] > 0
    changed = lambda a, b: sum(not torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert changed(before_g, run.gen.state_dict()) > len(before_g) // 2
    assert changed(before_d, run.disc.state_dict()) == len(before_d)
    # every content-encoder, style-encoder and decoder weight got a gradient
    assert all(p.grad is not None for p in run.gen.parameters())
    x, idx = run.batch(0)
    assert x.shape == (8, 1, 16, 16) and x.min() >= -1 and x.max() <= 1 and len(idx) == 8


@pytest.mark.parametrize("source", ["defaults", "fmnist_munit.yaml", "fmnist_munit_small.yaml",
                                    "cifar10_munit.yaml", "gtsrb_munit.yaml"])
def test_defaults_are_the_papers(source):
    """docs/design.md#generator: losses 1 / 10 / 1 / 1 with no cycle term, Adam (0.5, 0.999) with weight decay 1e-4,
    lr 1e-4 at batch 1 (here scaled by sqrt(batch)), halved every 100k images, MUNIT architecture."""
    cfg = generator.GeneratorTrainConfig() if source == "defaults" else \
        load_config(generator.GeneratorTrainConfig, os.path.join("configs", "generator", source))
    assert (cfg.gan_weight, cfg.recon_x_weight, cfg.recon_s_weight, cfg.recon_c_weight,
            cfg.recon_cycle_weight) == (1.0, 10.0, 1.0, 1.0, 0.0)
    assert (cfg.beta1, cfg.beta2, cfg.weight_decay) == (0.5, 0.999, 1e-4)
    assert cfg.lr == pytest.approx(1e-4 * cfg.batch_size ** 0.5)
    assert cfg.lr_step * cfg.batch_size == 100_000  # the paper's 100k iterations at batch 1, in images
    lrs = [generator.learning_rate(cfg, i) for i in (0, cfg.lr_step - 1, cfg.lr_step, 2 * cfg.lr_step)]
    assert lrs == pytest.approx([cfg.lr, cfg.lr, cfg.lr / 2, cfg.lr / 4])  # StepLR, gamma 0.5
    assert cfg.iterations * cfg.batch_size == (10_000 if "fmnist" in source or source == "defaults" else 140_000)
    assert cfg.flip == (source != "gtsrb_munit.yaml")
    if source != "fmnist_munit_small.yaml":  # the small preset narrows the networks on purpose
        paper = {"width": 64, "n_downsample": 2, "n_res": 4, "style_dim": 8, "mlp_dim": 256, "disc_width": 64,
                 "disc_layers": 4}
        assert {k: getattr(cfg.arch, k) for k in paper} == paper


def test_trainer_uses_the_configured_optimiser_and_init(npz16, tmp_path):
    run = generator.GeneratorRun(tiny_cfg(npz16, tmp_path, arch=dict(TINY_ARCH, disc_width=16)))
    for opt, model in ((run.opt_g, run.gen), (run.opt_d, run.disc)):
        assert len(opt.param_groups) == 1
        group = opt.param_groups[0]
        assert isinstance(opt, torch.optim.Adam) and group["betas"] == (0.5, 0.999)
        assert group["weight_decay"] == 1e-4 and not group["amsgrad"] and not group.get("decoupled_weight_decay")
        assert group["params"] == list(model.parameters())
    # Kaiming-normal (fan_in) generator weights, N(0, 0.02) discriminator weights, zero biases
    # (PyTorch's own init would give std 1 / sqrt(3 fan_in) and non-zero biases).
    block = run.gen.content_encoder.net[-1].conv1.conv  # 32 -> 32, 3x3: 9216 weights
    assert block.weight.std().item() == pytest.approx((2 / block.weight[0].numel()) ** 0.5, rel=0.05)
    big = run.disc.net[6].conv  # 64 -> 128, 4x4: 131072 weights
    assert big.weight.std().item() == pytest.approx(0.02, rel=0.02)
    for model in (run.gen, run.disc):
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                assert m.bias.abs().sum() == 0


def test_discriminator_step_then_generator_step(npz16, tmp_path):
    run = generator.GeneratorRun(tiny_cfg(npz16, tmp_path))
    events, seen = [], {}

    def spy(name, fn):
        def wrapped(*args):
            events.append(name)
            return fn(*args)
        return wrapped

    run.d_losses, run.g_losses = spy("d_loss", run.d_losses), spy("g_loss", run.g_losses)

    def before_d_step(opt, args, kwargs):
        events.append("d_step")
        # the fakes D saw were detached from G: D's backward left G without gradients
        seen["g_grads_at_d_step"] = [p.grad for p in run.gen.parameters()]
        seen["d_grads"] = [p.grad.clone() for p in run.disc.parameters()]

    def before_g_step(opt, args, kwargs):
        events.append("g_step")
        seen["d_grads_at_g_step"] = [p.grad.clone() for p in run.disc.parameters()]
        seen["g_grads"] = [p.grad for p in run.gen.parameters()]

    run.opt_d.register_step_pre_hook(before_d_step)
    run.opt_g.register_step_pre_hook(before_g_step)
    run.train_step(0)
    assert events == ["d_loss", "d_step", "g_loss", "g_step"]
    assert all(g is None for g in seen["g_grads_at_d_step"])
    assert all(g is not None for g in seen["g_grads"])
    # and G's backward (through D) did not accumulate into D's gradients
    assert all(torch.equal(a, b) for a, b in zip(seen["d_grads"], seen["d_grads_at_g_step"]))
    assert all(p.requires_grad for p in run.disc.parameters())  # D unfrozen again after G's step


def expected_batch(run, iteration, flip_axis=3):
    """Both streams' images of ``iteration`` rebuilt from the seeded draws: the sampled indices, in
    [-1, 1], with the images whose flip draw is < 0.5 mirrored along ``flip_axis`` (None: not
    mirrored); and the flip mask (all false when the config has flip=false)."""
    cfg, xs, flips = run.cfg, [], []
    for stream in (generator.STREAM_A, generator.STREAM_B):
        idx, g = generator.stream_indices(run.weights, cfg.batch_size, cfg.seed, iteration, stream)
        x = generator.to_unit_range(torch.from_numpy(run.ds.x_train[idx.numpy()]).permute(0, 3, 1, 2))
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5 if cfg.flip else torch.zeros(cfg.batch_size, dtype=bool)
        if flip_axis is not None:
            x[flip] = x[flip].flip(flip_axis)
        xs.append(x)
        flips.append(flip)
    return torch.cat(xs), torch.cat(flips)


@pytest.mark.parametrize("flip", [True, False])
def test_batch_is_the_sampled_images_with_the_drawn_flips(npz16, tmp_path, flip):
    run = generator.GeneratorRun(tiny_cfg(npz16, tmp_path, batch_size=8, flip=flip))
    n_flipped = 0
    for iteration in range(3):
        x, _ = run.batch(iteration)
        want, flipped = expected_batch(run, iteration)
        assert torch.equal(x, want)  # horizontal mirror (width axis) of exactly the drawn images
        n_flipped += int(flipped.sum())
        if flipped.any():  # the check tells the axes apart: a vertical flip, or none, gives other images
            assert not torch.equal(x, expected_batch(run, iteration, flip_axis=2)[0])
            assert not torch.equal(x, expected_batch(run, iteration, flip_axis=None)[0])
    if flip:
        assert 0 < n_flipped < 3 * 16  # both outcomes occur
    else:
        assert n_flipped == 0


def test_bf16_autocast_training_step_on_cpu(npz16, tmp_path):
    runs = {}
    for amp in ("bf16", "off"):
        runs[amp] = generator.GeneratorRun(tiny_cfg(npz16, tmp_path / amp, amp=amp))
    assert runs["bf16"].amp_dtype == torch.bfloat16 and runs["off"].amp_dtype is None
    before = {k: v.clone() for k, v in runs["bf16"].gen.state_dict().items()}
    terms = {amp: run.train_step(0) for amp, run in runs.items()}
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in terms["bf16"].values())
    assert any(not torch.equal(v, runs["bf16"].gen.state_dict()[k]) for k, v in before.items())
    assert all(p.dtype == torch.float32 for p in runs["bf16"].gen.parameters())  # autocast, not a cast model
    # the same step in bf16 gives close but not identical losses (autocast was really on)
    for k in ("loss_d", "loss_recon_x", "loss_recon_s"):
        assert terms["bf16"][k] == pytest.approx(float(terms["off"][k]), rel=0.1), k
    assert any(not torch.equal(terms["bf16"][k], terms["off"][k]) for k in terms["off"])


def test_streams_are_class_balanced_and_independent(npz16):
    ds = datasets.build_dataset(data_dict(npz16))
    labels = torch.from_numpy(ds.y_train)
    assert ds.train_class_counts == [40, 20, 8, 4]
    w = generator.example_weights(labels, ds.train_class_counts)
    draws = {s: torch.cat([generator.stream_indices(w, 16, 3, it, s)[0] for it in range(400)])
             for s in (generator.STREAM_A, generator.STREAM_B)}
    a, b = labels[draws[generator.STREAM_A]].numpy(), labels[draws[generator.STREAM_B]].numpy()
    for cls in (a, b):  # balanced: every class ~1/4 although the data are 40:20:8:4
        assert stats.chisquare(np.bincount(cls, minlength=4)).pvalue > 1e-3
    table = np.zeros((4, 4))
    np.add.at(table, (a, b), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-3  # class of stream a says nothing about stream b
    assert (draws[generator.STREAM_A] != draws[generator.STREAM_B]).float().mean() > 0.9
    again = generator.stream_indices(w, 16, 3, 7, generator.STREAM_A)[0]
    assert torch.equal(again, draws[generator.STREAM_A][7 * 16:8 * 16])  # seeded by (seed, iteration, stream)


def test_short_run_writes_every_output(npz16, tmp_path):
    summary = generator.train(tiny_cfg(npz16, tmp_path, recon_cycle_weight=1.0))
    run_dir = tmp_path / "gen"
    for f in ("config.yaml", "metrics.jsonl", "state.pt", "generator.pt", "samples_0000002.png",
              "samples_0000004.png", "samples_final.png", "summary.json"):
        assert (run_dir / f).is_file() and (run_dir / f).stat().st_size > 0, f
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [2, 4]
    for r in records:
        for k in (*generator.LOSS_KEYS, "lr", "images_per_s", "iterations_per_s", "images_seen"):
            assert k in r and np.isfinite(r[k]), k
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["arch"]["channels"] == 1 and saved["arch"]["image_size"] == 16  # resolved from the data
    assert saved["data"]["profile"] == "list"
    ck = torch.load(run_dir / "generator.pt", weights_only=True)
    assert ck["format"] == "invtransfer/generator" and ck["state"] == "weights"
    assert ck["dataset"]["image_shape"] == [1, 16, 16] and len(ck["dataset"]["fingerprint"]) == 16
    assert (ck["iteration"], ck["images_seen"]) == (4, 16) == (summary["iterations"], summary["images_seen"])
    assert "discriminator" not in ck and "opt_g" not in ck
    # the frozen generator carries its run's config and resolved architecture
    assert ck["arch"] == {"channels": 1, "image_size": 16, "width": 8, "n_downsample": 2, "n_res": 1,
                          "style_dim": 8, "mlp_dim": 16, "disc_width": 8, "disc_layers": 4}
    assert (ck["config"]["batch_size"], ck["config"]["iterations"], ck["config"]["recon_cycle_weight"]) == (4, 4, 1.0)
    assert ck["config"]["arch"] == ck["arch"] and ck["config"]["data"]["counts"] == [40, 20, 8, 4]
    assert ck["config"]["data"]["name"] == "fmnist-bg-lt" and ck["config"]["seed"] == 0
    rebuilt = generator.MunitGenerator(from_dict(generator.MunitArch, ck["arch"]))
    rebuilt.load_state_dict(ck["generator"])  # strict: the architecture inside matches the weights
    # CPU time of the training loop, next to its wall time (one thread here)
    with open(run_dir / "summary.json") as fh:
        assert json.load(fh) == summary
    assert summary["cpu_time_partial"] is False
    assert 0 < summary["cpu_time_s"] <= summary["wall_time_s"] * torch.get_num_threads() + 0.5
    state = torch.load(run_dir / "state.pt", weights_only=True)
    assert 0 < state["cpu_time_s"] <= summary["cpu_time_s"] and state["cpu_time_partial"] is False
    import matplotlib.pyplot as plt
    grid = plt.imread(run_dir / "samples_final.png")
    # 4 classes x (4 * 16 + 2 pad) rows; real + reconstruction + 6 styles columns (16 px cells x4)
    assert grid.shape[:2] == (4 * 66 + 2, 8 * 66 + 2)


def test_existing_run_dir_needs_resume_or_overwrite(npz16, tmp_path):
    generator.train(tiny_cfg(npz16, tmp_path, iterations=1))
    with pytest.raises(InvTransferError, match="already exists.*resume=true.*overwrite=true"):
        generator.train(tiny_cfg(npz16, tmp_path, iterations=1))
    generator.train(tiny_cfg(npz16, tmp_path, iterations=1, overwrite=True))


def test_load_generator_round_trip(npz16, tmp_path):
    run = generator.GeneratorRun(tiny_cfg(npz16, tmp_path))
    run.run()
    x = generator.to_unit_range(batches.to_device_images(run.ds.x_val[:5], "cpu"))
    with torch.no_grad():
        want = run.gen(x)
    for path in (tmp_path / "gen", tmp_path / "gen" / "generator.pt", tmp_path / "gen" / "state.pt"):
        gen, meta = generator.load_generator(str(path))
        assert not gen.training and not any(p.requires_grad for p in gen.parameters())
        with torch.no_grad():
            assert torch.equal(gen(x), want), path
        assert meta["image_shape"] == [1, 16, 16] and meta["iteration"] == 4 and meta["images_seen"] == 16
        assert meta["fingerprint"] == run.ds.fingerprint


def test_sigterm_then_resume_gives_identical_generator(npz16, tmp_path, monkeypatch):
    generator.train(tiny_cfg(npz16, tmp_path / "a", iterations=6, checkpoint_every=4))
    ref = load_checkpoint(str(tmp_path / "a" / "gen" / "generator.pt"), "generator")["generator"]

    real_step = generator.GeneratorRun.train_step
    calls = {"n": 0}

    def step_then_signal(self, iteration):
        out = real_step(self, iteration)
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(generator.GeneratorRun, "train_step", step_then_signal)
    with pytest.raises(TrainingInterrupted, match="iteration 3/6"):
        generator.train(tiny_cfg(npz16, tmp_path / "b", iterations=6, checkpoint_every=4))
    monkeypatch.setattr(generator.GeneratorRun, "train_step", real_step)
    run_b = tmp_path / "b" / "gen"
    assert load_checkpoint(str(run_b / "state.pt"), "generator")["iteration"] == 3
    assert not (run_b / "generator.pt").exists()
    state = load_checkpoint(str(run_b / "state.pt"), "generator")
    first_cpu = state["cpu_time_s"]  # the interrupted process's own CPU time
    assert first_cpu > 0 and state["cpu_time_partial"] is False
    state["wall_time_s"] = 1000.0  # the interrupted process's time must carry over into summary.json
    atomic_save(state, str(run_b / "state.pt"))
    cpu0 = time.process_time()
    summary = generator.train(tiny_cfg(npz16, tmp_path / "b", iterations=6, checkpoint_every=4, resume=True))
    second_cpu = time.process_time() - cpu0  # at least the resumed loop's own CPU time
    assert 1000 < summary["wall_time_s"] < 1000 + 600
    # CPU time is the sum over both processes: the first's plus at most the second's own
    assert first_cpu < summary["cpu_time_s"] <= first_cpu + second_cpu and summary["cpu_time_partial"] is False
    got = load_checkpoint(str(run_b / "generator.pt"), "generator")["generator"]
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    lines = (run_b / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [2, 4, 6]
    # a resume with another training option is refused, naming the key
    with pytest.raises(InvTransferError, match="recon_x_weight"):
        generator.train(tiny_cfg(npz16, tmp_path / "b", iterations=6, resume=True, recon_x_weight=5.0))
    # a state written before cpu_time_s existed resumes; its CPU time counts 0 and the total says so
    state = load_checkpoint(str(run_b / "state.pt"), "generator")
    state["cpu_time_s"] = 1000.0
    atomic_save(state, str(run_b / "state.pt"))
    summary = generator.train(tiny_cfg(npz16, tmp_path / "b", iterations=7, resume=True))
    assert summary["cpu_time_s"] > 1000 and summary["cpu_time_partial"] is False  # added, not restarted
    state = load_checkpoint(str(run_b / "state.pt"), "generator")
    del state["cpu_time_s"], state["cpu_time_partial"]
    atomic_save(state, str(run_b / "state.pt"))
    cpu0 = time.process_time()
    summary = generator.train(tiny_cfg(npz16, tmp_path / "b", iterations=8, resume=True))
    assert 0 < summary["cpu_time_s"] <= time.process_time() - cpu0 and summary["cpu_time_partial"] is True
    assert load_checkpoint(str(run_b / "state.pt"), "generator")["cpu_time_partial"] is True  # and stays so
    assert summary["wall_time_s"] > 1000


def test_non_finite_loss_names_iteration_and_term(npz16, tmp_path, monkeypatch):
    real_step = generator.GeneratorRun.train_step

    def nan_at_two(self, iteration):
        out = real_step(self, iteration)
        if iteration == 2:
            out["loss_recon_c"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(generator.GeneratorRun, "train_step", nan_at_two)
    with pytest.raises(InvTransferError, match=r"non-finite loss \(loss_recon_c\) at iteration 2"):
        generator.train(tiny_cfg(npz16, tmp_path))
    # the state written after iteration 2 (the last good one) is kept
    assert load_checkpoint(str(tmp_path / "gen" / "state.pt"), "generator")["iteration"] == 2


def test_nuisance_sampler(npz16, tmp_path):
    generator.train(tiny_cfg(npz16, tmp_path))
    sampler = generator.NuisanceSampler.from_path(str(tmp_path / "gen"), chunk_size=3)
    ds = datasets.build_dataset(data_dict(npz16))
    mean, std = batches.channel_stats(ds.x_train)
    norm = batches.Normalizer(mean, std)
    x = norm(batches.to_device_images(ds.x_val[:7], "cpu"))
    out1 = sampler(x, mean, std, torch.Generator().manual_seed(1))
    out2 = sampler(x, mean, std, torch.Generator().manual_seed(1))
    out3 = sampler(x, mean, std, torch.Generator().manual_seed(2))
    assert out1.shape == x.shape and out1.dtype == torch.float32 and not out1.is_inference()
    assert torch.equal(out1, out2) and not torch.allclose(out1, out3)
    # the output is in the classifier normalisation: back to pixels it lies in 0..255 and
    # equals decode(content(x), s) of the same styles computed by hand
    pixels = norm.to_pixels(out1)
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
    gen = sampler.gen
    s = torch.randn(7, gen.style_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        by_hand = generator.to_pixels(gen.decode(gen.content_encoder(
            generator.to_unit_range(batches.to_device_images(ds.x_val[:7], "cpu"))), s))
    assert torch.allclose(pixels, by_hand, atol=1e-3)
    with pytest.raises(InvTransferError, match=r"\(7, 1, 12, 12\).*\(1, 16, 16\)"):
        sampler(torch.zeros(7, 1, 12, 12), mean, std, torch.Generator())
    with pytest.raises(InvTransferError, match="3/3 entries.*1 channel"):
        sampler(x, [0.5] * 3, [0.5] * 3, torch.Generator())


def test_bad_inputs_are_clear_errors(npz16, tmp_path):
    with pytest.raises(InvTransferError, match="batch_size'=1000 is larger than the 72 training images"):
        generator.GeneratorRun(tiny_cfg(npz16, tmp_path, batch_size=1000))
    with pytest.raises(InvTransferError, match=r"arch.channels'=3 contradicts dataset .* channels 1 .*\(1, 16, 16\)"):
        generator.GeneratorRun(tiny_cfg(npz16, tmp_path, arch=dict(TINY_ARCH, channels=3)))
    with pytest.raises(InvTransferError, match=r"arch.image_size'=32 contradicts .* image side 16"):
        generator.GeneratorRun(tiny_cfg(npz16, tmp_path, arch=dict(TINY_ARCH, image_size=32)))
    npz12 = write_npz(tmp_path / "tiny12.npz", 12)
    with pytest.raises(InvTransferError, match="too small for the style encoder"):
        generator.GeneratorRun(tiny_cfg(npz12, tmp_path))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InvTransferError, match="truncated or not a PyTorch checkpoint"):
        generator.load_generator(str(bad))
    clf = tmp_path / "model.pt"
    atomic_save({"format": "invtransfer/classifier", "state": "weights", "model": {}}, str(clf))
    with pytest.raises(InvTransferError, match="is a classifier checkpoint; expected a generator"):
        generator.load_generator(str(clf))
    with pytest.raises(InvTransferError, match="holds neither generator.pt nor state.pt"):
        generator.load_generator(str(tmp_path))
    broken = tmp_path / "broken.pt"
    atomic_save({"format": "invtransfer/generator", "arch": {"width": 8}}, str(broken))
    with pytest.raises(InvTransferError, match="does not hold a consistent generator"):
        generator.load_generator(str(broken))
    # a generator trained on 16x16 images against a 28x28 dataset
    generator.train(tiny_cfg(npz16, tmp_path, iterations=1))
    npz28 = write_npz(tmp_path / "tiny28.npz", 28)
    with pytest.raises(InvTransferError, match=r"\(1, 28, 28\), but the generator was trained on \(1, 16, 16\)"):
        generator_quality.generator_quality(str(tmp_path / "gen"), from_dict(DatasetConfig, data_dict(npz28)),
                                            device="cpu")


