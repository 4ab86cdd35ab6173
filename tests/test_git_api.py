"""invtransfer.git, the public GIT mixer: the engine's batches, exactly the planned slots, labels,
no generator call without a slot, seeding, shards, autocast and bad input."""

import numpy as np
import pytest
import torch

from git_reference_setup import reference_run, write_generator
from invtransfer.data import batches
from invtransfer.errors import InvTransferError
from invtransfer.git import FrozenGenerator, GitMixer, MixPlan, keep_probability, load_generator
from invtransfer.models.munit import MunitGenerator
from invtransfer.train.inference import NuisanceSampler

REFERENCE = __file__.rsplit("/", 1)[0] + "/data/git_engine_reference.npz"


def reference_steps():
    ref = np.load(REFERENCE)
    fields = ("bidx", "bidx2", "gen_slots", "gen_index", "gen_styles", "labels", "x", "y")
    return int(ref["epoch"]), [{k: torch.from_numpy(ref[f"{k}_{i}"]) for k in fields} for i in range(int(ref["steps"]))]


def public_batch(run, mixer, bidx, bidx2, epoch, step):
    """One training batch composed with the public mixer the way the engine composes it: the main
    batch's augmentation from stream 1, then GIT's choice, the chosen sources' augmentation and
    the styles from the mixer's stream."""
    x = run.augmenter.apply(run.x_train[bidx], run.augmenter.sample(len(bidx), batches.step_generator(0, epoch, step, 1)))
    y = run.y_train_cpu[bidx].clone()
    rng = mixer.rng(epoch, step)
    labels2 = run.y_train_cpu[bidx2]
    slots = mixer.choose(labels2, rng)
    if len(slots):
        augment = run.augmenter.sample(len(slots), rng)
        plan = MixPlan(slots, labels2[slots], mixer.draw_styles(len(slots), rng))
        mixer.replace(x, plan, run.augmenter.apply(run.x_train[bidx2[slots]], augment), y=y)
    return x, y, slots


def test_engine_and_public_mixer_give_the_engines_former_batches(tmp_path):
    """tests/data/git_engine_reference.npz holds the batches of the engine before it called the
    public mixer (fixed seed; crop + flip; threshold weighting drops some slots)."""
    epoch, steps = reference_steps()
    run, _ = reference_run(str(tmp_path))
    cfg = run.cfg.git
    mixer = GitMixer(run.nuisance_sampler, run.ds.train_class_counts, gen_frac=cfg.gen_frac, weighting=cfg.weighting,
                     class_size_threshold=cfg.class_size_threshold, seed=run.cfg.seed, mean=run.normalizer.mean,
                     std=run.normalizer.std)
    assert sum(len(s["gen_slots"]) for s in steps) > 0
    for step, ref in enumerate(steps):
        plan = run.plan_batch(ref["bidx"], epoch, step, ref["bidx2"])
        assert torch.equal(plan.gen_slots, ref["gen_slots"]) and torch.equal(plan.gen_index, ref["gen_index"])
        assert torch.equal(plan.labels, ref["labels"])
        if len(ref["gen_slots"]):
            assert torch.equal(plan.gen_styles, ref["gen_styles"])
        x, y = run.materialize(plan)
        torch.testing.assert_close(x, ref["x"], rtol=0, atol=1e-5)  # the generator's float32 convolutions
        assert torch.equal(y, ref["y"])
        x2, y2, slots = public_batch(run, mixer, ref["bidx"], ref["bidx2"], epoch, step)
        assert torch.equal(slots, ref["gen_slots"]) and torch.equal(y2, ref["y"])
        assert torch.equal(x2, x)


def small_generator(tmp_path, channels=1, size=16):
    return load_generator(write_generator(tmp_path / "g.pt", channels=channels, size=size))


def batch(n=16, channels=1, size=16, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_mixer_replaces_exactly_the_planned_slots_and_keeps_labels(tmp_path):
    gen = small_generator(tmp_path)
    mixer = GitMixer(gen, [40, 20, 8, 4], gen_frac=0.5, weighting="linear", class_size_threshold=30, seed=3,
                     mean=[0.3], std=[0.2])
    x, y = batch(seed=1)
    x2, y2 = batch(seed=2)
    x_in, y_in, x2_in, y2_in = x.clone(), y.clone(), x2.clone(), y2.clone()
    found = 0
    for step in range(6):
        plan = mixer.plan(y2, epoch=1, step=step)
        xm, ym, replaced = mixer(x, y, x2, y2, epoch=1, step=step)
        assert torch.equal(replaced, plan.slots)
        assert set(replaced.tolist()) <= set(range(0, 16, 2))  # among the evenly spaced candidates
        assert all(keep_probability("linear", [40, 20, 8, 4], 30)[int(y2[s])] > 0 for s in replaced)
        rest = torch.ones(16, dtype=torch.bool)
        rest[replaced] = False
        assert torch.equal(xm[rest], x[rest]) and torch.equal(ym[rest], y[rest])  # the others untouched
        assert torch.equal(ym[replaced], y2[replaced])  # generated slots carry the second batch's labels
        assert torch.equal(xm[replaced], gen(x2[replaced], [0.3], [0.2], styles=plan.styles))
        assert not torch.allclose(xm[replaced], x2[replaced])
        found += len(replaced)
    assert found > 0
    # the caller's tensors are never written
    assert all(torch.equal(a, b) for a, b in ((x, x_in), (y, y_in), (x2, x2_in), (y2, y2_in)))


def test_mixer_is_seeded_by_seed_epoch_step_and_rank(tmp_path):
    gen = small_generator(tmp_path)
    x, y = batch(seed=1)
    x2, y2 = batch(seed=2)
    a = GitMixer(gen, [40, 20, 8, 4], seed=5)
    r1, r2 = a(x, y, x2, y2, epoch=2, step=3), GitMixer(gen, [40, 20, 8, 4], seed=5)(x, y, x2, y2, epoch=2, step=3)
    assert torch.equal(r1.x, r2.x) and torch.equal(r1.y, r2.y)
    assert torch.equal(r1.replaced, torch.arange(8) * 2)  # weighting none: every candidate slot
    other_step = a(x, y, x2, y2, epoch=2, step=4)
    other_rank = GitMixer(gen, [40, 20, 8, 4], seed=5, rank=1)(x, y, x2, y2, epoch=2, step=3)
    assert not torch.equal(other_step.x, r1.x) and not torch.equal(other_rank.x, r1.x)


def test_no_slot_no_generator_call(tmp_path, monkeypatch):
    gen = small_generator(tmp_path)

    def refuse(*a, **k):
        raise AssertionError("the generator was called")

    monkeypatch.setattr(NuisanceSampler, "__call__", refuse)
    monkeypatch.setattr(MunitGenerator, "decode", refuse)
    x, y = batch(seed=1)
    x2, _ = batch(seed=2)
    big = torch.zeros(16, dtype=torch.long)  # all class 0, the largest
    for mixer in (GitMixer(gen, [40, 20, 8, 4], gen_frac=0.0),
                  GitMixer(gen, [40, 20, 8, 4], weighting="threshold", class_size_threshold=8)):
        out = mixer(x, y, x2, big, epoch=0, step=0)
        assert out.x is x and out.y is y and len(out.replaced) == 0
    one = GitMixer(gen, [40, 20, 8, 4], gen_frac=0.5)  # int(0.5 * 1) = 0 candidates
    assert len(one(x[:1], y[:1], x2[:1], big[:1], epoch=0, step=0).replaced) == 0
    # and nothing is drawn after the (empty) choice
    mixer = GitMixer(gen, [40, 20, 8, 4], weighting="threshold", class_size_threshold=8)
    rng = mixer.rng(0, 0)
    assert len(mixer.choose(big, rng)) == 0
    assert mixer.plan(big, epoch=0, step=0).styles.shape == (0, gen.style_dim)


def test_shards_of_a_planned_batch_make_the_whole_batch(tmp_path):
    """Several processes plan the global batch alike and each generates only its rows."""
    gen = small_generator(tmp_path)
    mixer = GitMixer(gen, [40, 20, 8, 4], gen_frac=0.75, seed=1)
    x, y = batch(n=12, seed=1)
    x2, y2 = batch(n=12, seed=2)
    whole = mixer(x, y, x2, y2, epoch=0, step=7)
    plan = mixer.plan(y2, epoch=0, step=7)
    parts_x, parts_y = [], []
    for start, stop in ((0, 5), (5, 9), (9, 12)):
        xs, ys = x[start:stop].clone(), y[start:stop].clone()
        mine = plan.within(start, stop)
        n = mixer.replace(xs, plan, x2[plan.slots[mine]], y=ys, rows=(start, stop))
        assert n == int(mine.sum())
        parts_x.append(xs)
        parts_y.append(ys)
    assert torch.equal(torch.cat(parts_y), whole.y)
    # the same decodes, in smaller batches (a convolution may sum in another order)
    torch.testing.assert_close(torch.cat(parts_x), whole.x, rtol=0, atol=1e-5)


def test_mixer_inside_autocast_feeds_autograd(tmp_path):
    gen = small_generator(tmp_path)
    mixer = GitMixer(gen, [40, 20, 8, 4])
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    x, y = batch(seed=1)
    x2, y2 = batch(seed=2)
    plain = mixer(x, y, x2, y2, epoch=0, step=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xm, ym, replaced = mixer(x, y, x2, y2, epoch=0, step=0)
        loss = torch.nn.functional.cross_entropy(model(xm).float(), ym)
    loss.backward()
    assert xm.dtype == torch.float32 and len(replaced) == 8
    torch.testing.assert_close(xm, plain.x)  # the generator keeps its own precision (float32 on CPU)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mixer_on_cuda_matches_cpu_plan(tmp_path):
    gen = load_generator(write_generator(tmp_path / "g.pt"), device="cuda", amp="off")
    mixer = GitMixer(gen, [40, 20, 8, 4])
    x, y = batch(seed=1)
    x2, y2 = batch(seed=2)
    out = mixer(x.cuda(), y.cuda(), x2.cuda(), y2, epoch=0, step=0)
    cpu = GitMixer(small_generator(tmp_path), [40, 20, 8, 4])(x, y, x2, y2, epoch=0, step=0)
    assert torch.equal(out.replaced, cpu.replaced) and torch.equal(out.y.cpu(), cpu.y)
    torch.testing.assert_close(out.x.cpu(), cpu.x, rtol=1e-3, atol=1e-3)


def test_load_generator_is_frozen_and_records_its_run(tmp_path):
    gen = load_generator(write_generator(tmp_path / "g.pt"))
    assert isinstance(gen, FrozenGenerator) and not gen.gen.training
    assert not any(p.requires_grad for p in gen.gen.parameters())
    assert gen.image_shape == (1, 16, 16) and gen.style_dim == gen.gen.arch.style_dim
    assert gen.provenance()["iteration"] == 7 and gen.provenance()["images_seen"] == 28
    (tmp_path / "run").mkdir()
    with pytest.raises(InvTransferError, match="holds neither generator.pt nor state.pt"):
        load_generator(tmp_path / "run")


def test_mixer_bad_input(tmp_path):
    gen = small_generator(tmp_path)
    x, y = batch(seed=1)
    with pytest.raises(InvTransferError, match="gen_frac"):
        GitMixer(gen, [4, 2], gen_frac=1.5)
    with pytest.raises(InvTransferError, match="weighting 'linear' needs a class-size threshold"):
        GitMixer(gen, [4, 2], weighting="linear")
    with pytest.raises(InvTransferError, match="must exceed the smallest class size"):
        GitMixer(gen, [4, 2], weighting="linear", class_size_threshold=2)
    with pytest.raises(InvTransferError, match="one entry per image channel"):
        GitMixer(gen, [4, 2], mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    with pytest.raises(InvTransferError, match="load_generator"):
        GitMixer(object(), [4, 2])
    mixer = GitMixer(gen, [40, 20, 8, 4])
    with pytest.raises(InvTransferError, match="labels must lie in 0..3"):
        mixer(x, y, x, y + 4, epoch=0, step=0)
    with pytest.raises(InvTransferError, match="at least as many images"):
        mixer(x, y, x[:8], y[:8], epoch=0, step=0)
    with pytest.raises(InvTransferError, match="float"):
        mixer((x * 255).to(torch.uint8), y, x, y, epoch=0, step=0)


def test_generator_refuses_another_dataset_unless_allowed(tmp_path):
    from conftest import tiny_data_overrides
    from git_reference_setup import write_npz16

    data = tiny_data_overrides(write_npz16(tmp_path / "d.npz"))
    gen = load_generator(write_generator(tmp_path / "g.pt", data))
    fp = gen.meta["fingerprint"]
    kw = dict(what="dataset 'x'", override="git.allow_other_dataset=true")
    gen.check_dataset("fmnist-dil-lt", fp, nuisance="dil", instance=0, **kw)  # its own: accepted
    with pytest.raises(InvTransferError, match=r"trained on dataset 'fmnist-dil-lt'.*instance 0 vs 2.*"
                                               r"data\.instance=2.*git\.allow_other_dataset=true"):
        gen.check_dataset("fmnist-dil-lt", "0" * 16, nuisance="dil", instance=2, **kw)
    with pytest.raises(InvTransferError, match=r"dataset 'fmnist-dil-lt' vs 'fmnist-bg-lt'; nuisance 'dil' vs 'bg'"):
        gen.check_dataset("fmnist-bg-lt", "0" * 16, nuisance="bg", instance=0, **kw)
    with pytest.raises(InvTransferError, match="other dataset options or source files"):
        gen.check_dataset("fmnist-dil-lt", "0" * 16, nuisance="dil", instance=0, **kw)
    gen.check_dataset("fmnist-bg-lt", "0" * 16, allow_other_dataset=True, **kw)  # deliberate transfer
    anonymous = load_generator(write_generator(tmp_path / "a.pt"))
    with pytest.raises(InvTransferError, match="does not record the dataset it was trained on"):
        anonymous.check_dataset("fmnist-dil-lt", fp, **kw)
    prov = gen.provenance()
    assert prov["dataset_fingerprint"] == fp and prov["path"] == str(tmp_path / "g.pt") and prov["instance"] == 0


def test_input_crop_false_feeds_the_generator_only_flipped_images(tmp_path, monkeypatch):
    """git.input_crop=false (the official code's behaviour): the generator's inputs are the
    second stream's images, flipped where the augmentation flips, never cropped; the slots and
    styles are those of input_crop=true (the crop offsets are drawn, not applied). With
    augment=crop (GTSRB-LT, no flips) the inputs are the stored images unchanged."""
    epoch, steps = reference_steps()
    seen = []
    real_generate = GitMixer.generate
    monkeypatch.setattr(GitMixer, "generate", lambda self, s, st: seen.append(s.clone()) or real_generate(self, s, st))
    for augment in ("crop_flip", "crop"):
        plans, inputs = {}, {}
        for crop in (True, False):
            run, _ = reference_run(str(tmp_path / f"{augment}-{crop}"))
            run.cfg.augment.crop, run.cfg.git.input_crop = augment, crop
            run._setup()
            for step, ref in enumerate(steps):
                plan = run.plan_batch(ref["bidx"], epoch, step, ref["bidx2"])
                seen.clear()
                run.materialize(plan)
                plans[crop, step], inputs[crop, step] = plan, (torch.cat(seen) if seen else None)
                if not plan.generated:
                    continue
                # the same draws, made again: the sources' augmentation follows the choice
                rng = run.mixer.rng(epoch, step)
                run.mixer.choose(run.y_train_cpu[ref["bidx2"]], rng)
                drawn = run.augmenter.sample(plan.generated, rng)
                sources = run.x_train[plan.gen_index]
                if crop:
                    assert torch.equal(inputs[crop, step], run.augmenter.apply(sources, drawn))  # as before
                else:
                    want = sources if drawn.flip is None else batches.flip_where(sources, drawn.flip)
                    assert torch.equal(inputs[crop, step], run.normalizer(want))
        for step in range(len(steps)):
            a, b = plans[True, step], plans[False, step]
            assert torch.equal(a.gen_slots, b.gen_slots) and torch.equal(a.labels, b.labels)
            assert a.generated == 0 or torch.equal(a.gen_styles, b.gen_styles)
        assert any(inputs[True, s] is not None and not torch.equal(inputs[True, s], inputs[False, s])
                   for s in range(len(steps)))  # the crop did move some input
