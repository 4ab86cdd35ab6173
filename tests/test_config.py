"""Config loading: YAML + base chains + key=value overrides, validation errors naming the key."""

import pytest

from invtransfer.config import diff_configs, load_config, parse_overrides
from invtransfer.errors import InvTransferError
from invtransfer.train.classifier import TrainConfig


def test_defaults_yaml_and_overrides_stack(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("model: resnet20\noptim: {epochs: 50, decay1_epoch: 30, decay2_epoch: 40}\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\nrule: drs\noptim: {lr: 0.05}\n")
    cfg = load_config(TrainConfig, child, ["optim.lr=0.2", "data.instance=3", "resume=false"])
    assert cfg.model == "resnet20" and cfg.rule == "drs"
    assert cfg.optim.epochs == 50 and cfg.optim.decay1_epoch == 30  # from base
    assert cfg.optim.lr == 0.2  # override beats the file
    assert cfg.optim.momentum == 0.9  # dataclass default
    assert cfg.data.instance == 3


def test_override_parsing_types():
    assert parse_overrides(["a.b=1", "c=true", "d=[1, 2]", "e=null", "f=x/y"]) == \
        {"a": {"b": 1}, "c": True, "d": [1, 2], "e": None, "f": "x/y"}
    with pytest.raises(InvTransferError, match="key=value"):
        parse_overrides(["novalue"])


@pytest.mark.parametrize("override, needle", [
    (["optim.lrr=0.1"], "unknown config key 'optim.lrr'.*Did you mean 'optim.lr'|unknown config key 'optim.lrr'"),
    (["rule=dsr"], "config key 'rule'.*allowed values.*'drs'"),
    (["optim.lr=-1"], "config key 'optim.lr'.*> 0"),
    (["optim.epochs=ten"], "config key 'optim.epochs'.*integer"),
    (["optim.epochs=2.5"], "config key 'optim.epochs'.*integer"),
    (["compile=maybe"], "config key 'compile'.*true or false"),
    (["loss.name=hinge"], "config key 'loss.name'.*'ce'"),
    (["optim.epochs=100", "optim.decay1_epoch=100"], "decay1_epoch.*smaller than optim.epochs"),
    (["data.imbalance_ratio=0.5"], "data.imbalance_ratio.*>= 1"),
    (["data.name=cifar10lt"], "data.name.*Did you mean 'cifar10-lt'"),
    (["data=5"], "config key 'data'.*mapping"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(InvTransferError, match=needle):
        load_config(TrainConfig, None, override)


def test_bad_yaml_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(InvTransferError, match="not valid YAML"):
        load_config(TrainConfig, bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(InvTransferError, match="mapping"):
        load_config(TrainConfig, lst)
    with pytest.raises(InvTransferError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "missing.yaml")
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(InvTransferError, match="loops"):
        load_config(TrainConfig, loop)


def test_diff_configs_names_nested_keys():
    assert diff_configs({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 5, "d": 3}}) == ["b.c"]


def test_every_shipped_config_loads():
    import glob
    import os
    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    files = [f for f in glob.glob(os.path.join(root, "*", "*.yaml")) if not os.path.basename(f).startswith("_")]
    assert len(files) >= 20
    for f in files:
        if os.path.basename(os.path.dirname(f)) == "generator":  # MUNIT presets have their own config
            from invtransfer.train.generator import GeneratorTrainConfig
            assert load_config(GeneratorTrainConfig, f).iterations >= 1, f
            continue
        cfg = load_config(TrainConfig, f)
        assert cfg.optim.decay1_epoch < cfg.optim.epochs, f


def test_git_configs_default_generator_is_where_their_command_writes():
    """Each GIT config's default git.generator is the run the train-generator command in its header
    writes, for the config's own dataset (it used to point where nothing wrote)."""
    import glob
    import os
    import shlex

    from invtransfer.train.generator import GeneratorTrainConfig
    root = os.path.join(os.path.dirname(__file__), "..")
    files = sorted(glob.glob(os.path.join(root, "configs", "*", "*_git.yaml")))
    assert len(files) == 13
    for f in files:
        command = next(line[1:].strip() for line in open(f) if line.lstrip("# ").startswith("invtransfer train-generator"))
        argv = shlex.split(command)[2:]
        gen = load_config(GeneratorTrainConfig, os.path.join(root, argv[0]), argv[1:])
        cfg = load_config(TrainConfig, f)
        assert cfg.git.generator == os.path.join(gen.out_dir, gen.name), f
        assert gen.data.name == cfg.data.name, f


def test_numbers_in_exponent_notation_without_a_dot():
    # YAML 1.1 reads 4e-4 as a string; a number field takes it, a string field keeps it
    from invtransfer.train.generator import GeneratorTrainConfig

    cfg = load_config(GeneratorTrainConfig, None, ["lr=4e-4", "iterations=1e3", "data.name=fmnist-bg-lt"])
    assert cfg.lr == 4e-4 and cfg.iterations == 1000 and isinstance(cfg.iterations, int)
    with pytest.raises(InvTransferError, match="'lr': got 'abc', expected a number"):
        load_config(GeneratorTrainConfig, None, ["lr=abc"])
    with pytest.raises(InvTransferError, match="expected an integer"):
        load_config(GeneratorTrainConfig, None, ["iterations=1.5e0"])


# file stem -> (loss, rule) of every method preset (the *_git presets add git.generator on top)
PRESET_METHODS = {"ce": ("ce", "erm"), "ce_drs": ("ce", "drs"), "ldam_drw": ("ldam", "drw"),
                  "focal": ("focal", "erm"), "balanced_softmax": ("balanced_softmax", "erm"),
                  "balanced_softmax_drs": ("balanced_softmax", "drs"), "oracle": ("ce", "drs"),
                  "ce_rw": ("ce", "reweight")}
# family -> (dataset, model, epochs, E1, E2, augmentation, select) of docs/design.md#classifiers
PRESET_FAMILIES = {"cifar10_lt": ("cifar10-lt", "resnet32", 200, 160, 180, "crop_flip", "val"),
                   "cifar100_lt": ("cifar100-lt", "resnet32", 200, 160, 180, "crop_flip", "val"),
                   "k49_lt": ("k49-dil-lt", "resnet20", 50, 30, 40, "none", "last"),
                   "fmnist_lt": ("fmnist-dil-lt", "resnet20", 50, 30, 40, "none", "last")}


def _presets(family):
    import glob
    import os
    root = os.path.join(os.path.dirname(__file__), "..", "configs", family)
    return sorted(f for f in glob.glob(os.path.join(root, "*.yaml")) if not os.path.basename(f).startswith("_"))


@pytest.mark.parametrize("family", sorted(PRESET_FAMILIES))
def test_method_presets_follow_the_paper(family):
    import os
    from invtransfer.train.classifier import method_label

    dataset, model, epochs, e1, e2, augment, select = PRESET_FAMILIES[family]
    files = _presets(family)
    stems = {os.path.basename(f)[:-5] for f in files}
    # every baseline the paper compares against, with and without GIT where it applies
    assert {"ce", "ce_drs", "ldam_drw", "focal", "balanced_softmax", "balanced_softmax_drs", "ce_drs_git"} <= stems
    if family in ("k49_lt", "fmnist_lt"):
        assert "oracle" in stems
    for f in files:
        stem = os.path.basename(f)[:-5]
        cfg = load_config(TrainConfig, f)
        o = cfg.optim
        assert cfg.data.name == dataset and cfg.model == model, f
        assert (o.epochs, o.decay1_epoch, o.decay2_epoch, cfg.e1) == (epochs, e1, e2, e1), f
        assert (o.batch_size, o.lr, o.momentum, o.weight_decay, o.warmup_epochs) == (128, 0.1, 0.9, 2e-4, 5), f
        assert (o.schedule, o.decay1_factor, o.decay2_factor) == ("step", 0.01, 1e-4), f
        assert cfg.augment.crop == augment, f
        # the paper's recipe: no strong augmentation, no SAM (those are options on top)
        assert (cfg.augment.policy, cfg.augment.mixup, cfg.augment.cutmix, o.sam_rho) == ("none", 0.0, 0.0, 0.0), f
        if augment == "crop_flip":
            assert cfg.crop_padding == 4, f
        assert cfg.select == select, f
        loss, rule = PRESET_METHODS[stem.removesuffix("_git")]
        assert (cfg.loss.name, cfg.rule) == (loss, rule), f
        assert cfg.oracle == (stem == "oracle"), f
        assert bool(cfg.git.generator) == stem.endswith("_git"), f
        if loss == "focal":
            assert cfg.loss.focal_gamma == 1.0, f
        if loss == "ldam":
            assert (cfg.loss.ldam_max_margin, cfg.loss.ldam_scale) == (0.5, 30.0), f
        label = {"ce": "CE", "ce_drs": "CE+DRS", "ldam_drw": "LDAM-DRW", "focal": "Focal",
                 "balanced_softmax": "BalancedSoftmax", "balanced_softmax_drs": "BalancedSoftmax+DRS",
                 "oracle": "CE+DRS+Oracle", "ce_rw": "CE+reweight"}[stem.removesuffix("_git")]
        assert method_label(cfg) == label + ("+GIT" if stem.endswith("_git") else ""), f
