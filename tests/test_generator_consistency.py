"""The class-consistency term of MUNIT training (class_consistency_weight, classifier): off, the
loop is today's bit for bit; on, the term is the frozen classifier's cross-entropy on the
random-style decodes against their content's class, its gradient reaches the generator and not
the classifier; the config errors."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

from generator_reference_setup import ITERATIONS, machine_key, reference_config, reference_data, weight_digests
from git_reference_setup import write_classifier
from invtransfer.data import batches
from invtransfer.errors import InvTransferError
from invtransfer.train import generator
from invtransfer.train.inference import FrozenClassifier, load_frozen_classifier
from test_distributed import one_thread

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "generator_reference.json")


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread, as the reference was recorded (another thread count may sum in another order)."""
    with one_thread():
        yield


def with_classifier(tmp, weight=0.8, **top):
    """The reference run with the term on, its classifier a resnet20 of the same dataset."""
    clf = write_classifier(os.path.join(tmp, "clf.pt"), reference_data(tmp), mean=[0.3], std=[0.4], seed=1)
    return reference_config(tmp, class_consistency_weight=weight, classifier=clf, **top), clf


def test_weight_zero_trains_exactly_as_before(tmp_path):
    """tests/data/generator_reference.json holds the weights (digests) and loss terms of the loop
    before the term existed, per kind of machine; weight 0 (the default) must give them bit for bit
    where this kind of machine was recorded, and the loss terms within float tolerance elsewhere
    (another vector unit sums in another order: ~1e-7 relative; the term itself moves them by far
    more, checked below)."""
    ref = json.load(open(REFERENCE))
    if ref["torch"] != torch.__version__:
        pytest.skip(f"reference recorded with torch {ref['torch']}; this is {torch.__version__}")
    run = generator.GeneratorRun(reference_config(str(tmp_path)))
    assert run.cfg.class_consistency_weight == 0 and run.classifier is None
    terms = [{k: float(v) for k, v in sorted(run.train_step(i).items())} for i in range(ITERATIONS)]
    recorded = ref["machines"].get(machine_key())
    if recorded is not None:
        assert terms == recorded["terms"] and weight_digests(run) == recorded["weights"]
    else:
        assert any(flat(terms) == pytest.approx(flat(m["terms"]), rel=1e-5) for m in ref["machines"].values()), (
            f"no recording for {machine_key()!r} and the loss terms are not within 1e-5 of any recording")
    # and the term, on, changes the training well beyond that tolerance (the comparison can fail)
    on = generator.GeneratorRun(with_classifier(str(tmp_path / "on"))[0])
    on_terms = [{k: float(v) for k, v in sorted(on.train_step(i).items()) if k in terms[0]} for i in range(ITERATIONS)]
    assert flat(on_terms) != pytest.approx(flat(terms), rel=1e-3)


def flat(terms: list[dict]) -> list[float]:
    return [t[k] for t in terms for k in sorted(t)]


def test_the_term_is_the_cross_entropy_of_the_frozen_classifier(tmp_path):
    cfg, clf_path = with_classifier(str(tmp_path), weight=0.8)
    run = generator.GeneratorRun(cfg)
    model, meta = run.classifier.model, run.classifier.meta
    assert meta["normalizer"] == {"mean": [0.3], "std": [0.4]}
    # the function on known inputs: decodes in [-1, 1] -> the classifier's normaliser -> 2 * mean CE
    g = torch.Generator().manual_seed(0)
    decodes, labels = torch.rand(6, 1, 16, 16, generator=g) * 2 - 1, torch.tensor([0, 1, 2, 3, 3, 1])
    direct = 2.0 * F.cross_entropy(model(((decodes + 1) / 2 - 0.3) / 0.4), labels)
    got = generator.class_consistency_loss(run.classifier, decodes, labels)
    torch.testing.assert_close(got, direct, rtol=1e-6, atol=1e-6)
    assert float(got) > 0.1
    # in the loop: the random-style decodes of the iteration's two streams against their rows' classes
    seen = {}
    real = generator.class_consistency_loss

    def spy(classifier, fake, y):
        seen["fake"], seen["labels"] = fake.detach().clone(), y.clone()
        return real(classifier, fake, y)

    x, idx = run.batch(0)
    styles = torch.randn(2, 8, run.arch.style_dim,  # train_step's draw: both streams' styles, D's then G's
                         generator=batches.step_generator(0, 0, 0, stream=generator.STREAM_STYLE))
    generator.class_consistency_loss = spy
    try:
        terms = run.train_step(0)
    finally:
        generator.class_consistency_loss = real
    assert torch.equal(seen["labels"], run.y_train[idx])  # the content images' classes
    before = generator.GeneratorRun(reference_config(str(tmp_path), class_consistency_weight=0.8, classifier=clf_path,
                                                     name="fresh"))
    with torch.no_grad():  # the same decodes from the weights before the step: content of x, the drawn style
        want = before.gen.decode(before.gen.content_encoder(x), styles[1])
    torch.testing.assert_close(seen["fake"], want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms["loss_class"], 2.0 * F.cross_entropy(model(((want + 1) / 2 - 0.3) / 0.4),
                                                                          run.y_train[idx]), rtol=1e-5, atol=1e-5)
    others = sum(w * float(terms[k]) for k, w in (("loss_adv", 1.0), ("loss_recon_x", 10.0), ("loss_recon_s", 1.0),
                                                   ("loss_recon_c", 1.0)))
    assert float(terms["loss_g"]) == pytest.approx(others + 0.8 * float(terms["loss_class"]), rel=1e-5)


def test_the_gradient_reaches_the_generator_through_the_frozen_classifier(tmp_path):
    run = generator.GeneratorRun(with_classifier(str(tmp_path))[0])
    clf = run.classifier
    assert not clf.model.training and not any(p.requires_grad for p in clf.model.parameters())
    x, idx = run.batch(0)
    labels = run.y_train[idx]
    style = torch.randn(8, run.arch.style_dim, generator=torch.Generator().manual_seed(3))
    run.gen.zero_grad(set_to_none=True)
    term = run._g_losses(x, style, labels)["loss_class"]
    term.backward()
    assert all(p.grad is None for p in clf.model.parameters())  # the classifier learns nothing
    assert not clf.model.training  # and stays in eval mode (batch-norm statistics untouched)
    decoder = [p for n, p in run.gen.named_parameters() if n.startswith("decoder")]
    assert all(p.grad is not None for p in decoder) and sum(float(p.grad.abs().sum()) for p in decoder) > 0
    style_encoder = [p for n, p in run.gen.named_parameters() if n.startswith("style_encoder")]
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in style_encoder)  # not on this path
    # finite differences along the gradient of the decoder's last layer: the term's slope there
    last = decoder[-2] if decoder[-1].dim() == 1 else decoder[-1]
    direction = last.grad / last.grad.norm()
    eps = 1e-3  # the term changes by ~0.02: far above float32 noise, small against its curvature
    values = []
    with torch.no_grad():
        for sign in (1, -1):
            last.add_(sign * eps * direction)
            values.append(float(run._g_losses(x, style, labels)["loss_class"]))
            last.sub_(sign * eps * direction)
    slope = (values[0] - values[1]) / (2 * eps)
    assert slope == pytest.approx(float(last.grad.norm()), rel=0.05)


def test_a_run_with_the_term_logs_it_and_records_the_classifier(tmp_path):
    cfg, clf = with_classifier(str(tmp_path), weight=0.5, iterations=2, log_every=1)
    summary = generator.train(cfg)
    log = [json.loads(ln) for ln in open(os.path.join(str(tmp_path), "runs", "gen", "metrics.jsonl"))]
    assert [r["iteration"] for r in log] == [1, 2] and all(r["loss_class"] > 0 for r in log)
    assert summary["class_consistency"]["weight"] == 0.5 and summary["class_consistency"]["path"] == clf
    plain = generator.train(reference_config(str(tmp_path / "plain"), iterations=1))
    assert plain["class_consistency"] is None
    assert "loss_class" not in open(os.path.join(str(tmp_path / "plain"), "runs", "gen", "metrics.jsonl")).read()


def test_frozen_classifier_converts_any_normalisation(tmp_path):
    clf = load_frozen_classifier(write_classifier(tmp_path / "c.pt", reference_data(str(tmp_path)), mean=[0.3],
                                                  std=[0.4]))
    pixels = torch.rand(3, 1, 16, 16)
    want = clf.model((pixels - 0.3) / 0.4)
    for mean, std in ((0.5, 0.5), (0.0, 1.0), (0.3, 0.4), (0.1, 2.0)):
        torch.testing.assert_close(clf((pixels - mean) / std, [mean], [std]), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(clf((pixels - 0.3) / 0.4, [0.3], [0.4]), want)  # its own normalisation: unchanged
    assert isinstance(clf, FrozenClassifier)


def test_consistency_config_errors_name_their_keys(tmp_path):
    tmp = str(tmp_path)
    with pytest.raises(InvTransferError, match="config key 'classifier' is required with class_consistency_weight"):
        reference_config(tmp, class_consistency_weight=1.0)
    with pytest.raises(InvTransferError, match="'classifier'='x.pt' is set but class_consistency_weight is 0"):
        reference_config(tmp, classifier="x.pt")
    with pytest.raises(InvTransferError, match="config key 'class_consistency_weight'"):
        reference_config(tmp, class_consistency_weight=-1.0, classifier="x.pt")
    with pytest.raises(InvTransferError, match=r"config key 'classifier'='.*nope.pt': no such file"):
        generator.GeneratorRun(reference_config(tmp, class_consistency_weight=1.0, classifier=f"{tmp}/nope.pt"))
    # a classifier of another dataset (the same images as fmnist-dil-lt): refused before the run folder exists
    other = write_classifier(tmp_path / "other.pt", dict(reference_data(tmp), name="fmnist-dil-lt"))
    with pytest.raises(InvTransferError, match=r"config key 'classifier': classifier .*other.pt was trained on dataset "
                                               r"'fmnist-dil-lt' .*nuisance 'dil' vs 'bg'.*"
                                               r"classifier_allow_other_dataset=true"):
        generator.GeneratorRun(reference_config(tmp, class_consistency_weight=1.0, classifier=other))
    assert not (tmp_path / "runs").exists()
    run = generator.GeneratorRun(reference_config(tmp, class_consistency_weight=1.0, classifier=other,
                                                  classifier_allow_other_dataset=True))
    assert run.classifier.path == other
    generator.train(reference_config(tmp, iterations=1, name="g"))
    with pytest.raises(InvTransferError, match=r"config key 'classifier'=.*is a generator checkpoint"):
        generator.GeneratorRun(reference_config(tmp, class_consistency_weight=1.0, name="h",
                                                classifier=str(tmp_path / "runs" / "g" / "generator.pt")))
    assert not (tmp_path / "runs" / "h").exists()
