"""Training loops: determinism, mid-stage resume, staged conversion, atomic checkpoints."""

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from wcc import QuantConfig, WCCConfig
from wcc.train import Recipe, Stage, load_checkpoint, run_stage, save_checkpoint, stage_paths
from wcc.train.loops import StepBatches, train_steps


class _Toy(Dataset):
    """Random images whose label is 1 where the red channel is bright: learnable in a few steps."""

    def __init__(self, n=12, size=(16, 24)):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, *size, generator=g)
        self.targets = (self.images[:, 0] > 0.5).long()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


class _Crash:
    """A transform that raises at a given call, to simulate a killed run."""

    def __init__(self, at):
        self.calls, self.at = 0, at

    def __call__(self, image, target, generator=None):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt("simulated kill")
        return _identity(image, target, generator)


def _identity(image, target, generator=None):
    # Consume the generator like a random transform would, so determinism is exercised.
    if torch.rand((), generator=generator) < 0.5:
        image, target = image.flip(-1), target.flip(-1)
    return image, target


def toy_model():
    return nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1))


def _recipe(**kw):
    base = dict(task="segmentation", optimizer="adam", lr=1e-2, steps=8, batch_size=4, crop=(16, 24),
                finetune_lr=1e-3, finetune_steps=4, checkpoint_every=3)
    base.update(kw)
    return Recipe(**base)


def _meta():
    return {"arch": {"builder": "tests.test_train:toy_model"}, "conversions": []}


def test_resume_equals_uninterrupted(tmp_path):
    recipe = _recipe()
    torch.manual_seed(0)
    m1 = toy_model()
    train_steps(m1, StepBatches(_Toy(), _identity, 4, 0), recipe, total_steps=8, lr=1e-2,
                checkpoint_path=str(tmp_path / "a.pt"), checkpoint_meta=_meta(), progress=False)

    torch.manual_seed(0)
    m2 = toy_model()
    with pytest.raises(KeyboardInterrupt):  # dies during step 4 (after the step-3 checkpoint)
        train_steps(m2, StepBatches(_Toy(), _Crash(at=4 * 4 + 2), 4, 0), recipe, total_steps=8, lr=1e-2,
                    checkpoint_path=str(tmp_path / "b.pt"), checkpoint_meta=_meta(), progress=False)
    ckpt = load_checkpoint(tmp_path / "b.pt")
    assert ckpt["step"] == 3 and not ckpt["done"]
    assert ckpt["train_time_s"] > 0  # carried into the resumed stage's total
    m3 = toy_model()
    m3.load_state_dict(ckpt["model"])
    train_steps(m3, StepBatches(_Toy(), _identity, 4, 0), recipe, total_steps=8, lr=1e-2,
                checkpoint_path=str(tmp_path / "b.pt"), checkpoint_meta=_meta(), resume=ckpt, progress=False)
    for (k, a), b in zip(m1.state_dict().items(), m3.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_staged_recipe_runs_resumes_and_reuses(tmp_path):
    recipe = _recipe()
    keep = lambda m: ["0", "3"]  # noqa: E731  first conv and classifier stay FP
    calls = []

    def evaluate(model):
        calls.append(1)
        x, t = _Toy()[0]
        acc = (model(x[None]).argmax(1)[0] == t).float().mean().item()
        return {"acc": acc}

    kw = dict(arch={"builder": "tests.test_train:toy_model"}, recipe=recipe, train_set=_Toy(),
              train_transform=_identity, evaluate=evaluate, workdir=tmp_path, keep_fp=keep, progress=False)
    r0 = run_stage(Stage("fp32", None, None), **kw)
    r1 = run_stage(Stage("q88", "fp32", QuantConfig(8, 8)), **kw)
    r2 = run_stage(Stage("wcc50", "q88", WCCConfig(levels=1, keep_ratio=0.5)), **kw)
    assert not (r0.reused or r1.reused or r2.reused) and len(calls) == 3
    final = load_checkpoint(stage_paths(tmp_path, "wcc50")[1])
    assert [c["config"]["kind"] for c in final["conversions"]] == ["QuantConfig", "WCCConfig"]
    assert not stage_paths(tmp_path, "wcc50")[0].exists()  # mid-stage checkpoint removed when done
    again = run_stage(Stage("wcc50", "q88", WCCConfig(levels=1, keep_ratio=0.5)), **kw)
    assert again.reused and len(calls) == 3 and again.metrics == r2.metrics


def test_first_stage_from_a_checkpoint_is_evaluated_not_trained(tmp_path):
    from wcc.train import FirstStageInit

    recipe = _recipe()
    keep = lambda m: ["0", "3"]  # noqa: E731
    start = toy_model()
    torch.save({"model_state": start.state_dict()}, tmp_path / "start.pth")  # VainF's file layout
    seen = []

    def evaluate(model):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"acc": 0.5}

    kw = dict(arch={"builder": "tests.test_train:toy_model"}, recipe=recipe, train_set=_Toy(),
              train_transform=_identity, evaluate=evaluate, workdir=tmp_path / "w", keep_fp=keep, progress=False)
    r0 = run_stage(Stage("fp32", None, None), init=FirstStageInit(checkpoint=str(tmp_path / "start.pth")), **kw)
    assert r0.train_time_s == 0
    for k, v in start.state_dict().items():  # evaluated exactly as given
        assert torch.equal(seen[0][k], v), k
    final = load_checkpoint(r0.checkpoint)
    assert final["steps"] == 0 and final["init"]["checkpoint"] == str(tmp_path / "start.pth")
    # The next stage fine-tunes from it (and moves away from it).
    run_stage(Stage("q88", "fp32", QuantConfig(8, 8)), **kw)
    assert not torch.equal(seen[1]["1.weight"], start.state_dict()["1.weight"])
    # A converted stage's checkpoint is not a full-precision start.
    with pytest.raises(ValueError, match="converted stage"):
        run_stage(Stage("fp32", None, None), init=FirstStageInit(checkpoint=str(stage_paths(tmp_path / "w", "q88")[1])),
                  **{**kw, "workdir": tmp_path / "w2"})


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"x": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"x": 2})
    assert load_checkpoint(path)["x"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_bad_checkpoint_named(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_recipe_validation():
    with pytest.raises(ValueError, match="steps must be a positive int"):
        _recipe(steps=0)
    with pytest.raises(ValueError, match="optimizer"):
        _recipe(optimizer="rmsprop")
    r = _recipe()
    assert Recipe.from_dict(r.to_dict()) == r


def test_class_weights_follow_the_training_set_frequencies():
    from wcc.train.losses import class_frequencies, class_weights

    # 3 classes over 4 images of 10 pixels: class 0 on 24 pixels, class 1 on 12, class 2 on 4; 255 ignored.
    items = [(None, torch.tensor([0] * 6 + [1] * 3 + [2] * 1)) for _ in range(4)]
    items.append((None, torch.full((7,), 255)))
    f = class_frequencies(items, num_classes=4)
    assert f.tolist() == pytest.approx([0.6, 0.3, 0.1, 0.0])
    w = class_weights(f, "sqrt-median-frequency")
    # median of the present classes is 0.3; class 3 never occurs and keeps weight 1
    assert w.tolist() == pytest.approx([(0.3 / 0.6) ** 0.5, 1.0, 3 ** 0.5, 1.0])
    assert class_weights(f, "none") is None
    with pytest.raises(ValueError, match="unknown class weighting"):
        class_weights(f, "inverse")
    with pytest.raises(ValueError, match="labels outside"):
        class_frequencies([(None, torch.tensor([0, 5]))], num_classes=4)


def test_weighted_loss_counts_rare_classes_more():
    from wcc.train.losses import segmentation_loss

    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0] = 2.0  # predicts class 0 everywhere
    target = torch.tensor([[[0, 0, 0, 1]]])
    plain = segmentation_loss(logits, target)
    weighted = segmentation_loss(logits, target, weight=torch.tensor([1.0, 3.0]))
    assert torch.allclose(segmentation_loss(logits, target, weight=torch.ones(2)), plain)
    assert weighted > plain  # the one wrong pixel is of the up-weighted class


def test_recipe_class_weights_are_validated_and_used(tmp_path):
    with pytest.raises(ValueError, match="class_weights must be one of"):
        _recipe(class_weights="inverse")
    with pytest.raises(ValueError, match="segmentation only"):
        _recipe(task="depth", class_weights="sqrt-median-frequency")
    kw = dict(arch={"builder": "tests.test_train:toy_model"}, train_set=_Toy(), train_transform=_identity,
              evaluate=lambda m: {"score": 0.0}, keep_fp=lambda m: [], progress=False, log=lambda msg: None)
    plain = run_stage(Stage("fp32", None, None), recipe=_recipe(), workdir=tmp_path / "a", **kw)
    weighted = run_stage(Stage("fp32", None, None), recipe=_recipe(class_weights="sqrt-median-frequency"),
                         workdir=tmp_path / "b", **kw)
    a, b = load_checkpoint(plain.checkpoint), load_checkpoint(weighted.checkpoint)
    assert "class_weight" not in a and len(b["class_weight"]) == 2
    assert b["recipe"]["class_weights"] == "sqrt-median-frequency"
    assert not torch.equal(a["model"]["3.weight"], b["model"]["3.weight"])  # the weights changed the training


@pytest.mark.parametrize("handover, gain", [("carry", 1.0), ("transform-gain", 8.0)])
def test_recipe_clip_handover_starts_the_wcc_stage(tmp_path, handover, gain):
    with pytest.raises(ValueError, match="finetune_clip_handover must be one of"):
        _recipe(finetune_clip_handover="scaled")
    # A learning rate of 1e-12 keeps the clips where the hand-over put them.
    recipe = _recipe(finetune_lr=1e-12, finetune_clip_handover=handover)
    kw = dict(arch={"builder": "tests.test_train:toy_model"}, train_set=_Toy(), train_transform=_identity,
              evaluate=lambda m: {"score": 0.0}, keep_fp=lambda m: ["3"], progress=False, log=lambda msg: None,
              recipe=recipe, workdir=tmp_path)
    run_stage(Stage("fp32", None, None), **kw)
    q8 = load_checkpoint(run_stage(Stage("q8_8", "fp32", QuantConfig(8, 8)), **kw).checkpoint)
    wcc = load_checkpoint(run_stage(Stage("wcc50", "q8_8", WCCConfig(levels=3, keep_ratio=0.5)), **kw).checkpoint)
    assert wcc["recipe"]["finetune_clip_handover"] == handover
    # Layer 1 (1x1) becomes WCC: its clip moves to the wavelet domain; layer 0 (3x3) stays on pixels.
    assert wcc["model"]["1.act_alpha"].item() == pytest.approx(q8["model"]["1.act_alpha"].item() * gain, rel=1e-6)
    assert wcc["model"]["0.act_alpha"].item() == pytest.approx(q8["model"]["0.act_alpha"].item(), rel=1e-6)
