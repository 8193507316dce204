"""train_supervised: writes loadable safetensors with metadata, resumes, rejects bad data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from restorekit.training import train as train_mod  # noqa: E402
from restorekit.training.loop import checkpoint_path  # noqa: E402
from restorekit.training.train import train_supervised  # noqa: E402
from restorekit.core.errors import BadInputError  # noqa: E402
from restorekit.models.builtin import load_edgenet_safetensors, read_safetensors_metadata  # noqa: E402
from restorekit.core.image import write_image  # noqa: E402

TINY = {"channels": 4, "num_convs": 1}
FAST = dict(batch_size=2, patch_size=16, model_kwargs=TINY, progress=False, device="cpu")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        yy, xx = np.mgrid[0:40, 0:48].astype(np.float32)
        img = 0.5 + 0.4 * np.sin(xx / (3 + i))[..., None] * np.cos(yy / 4)[..., None] * np.ones(3)
        write_image(folder / f"img{i}.png", np.clip(img + 0.05 * rng.random((40, 48, 3)), 0, 1).astype(np.float32))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_train_writes_safetensors_that_load_back(data_dir, tmp_path):
    out = train_supervised([data_dir], tmp_path / "m.safetensors", steps=3, seed=5, **FAST)
    assert out == tmp_path / "m.safetensors" and out.is_file()
    meta = read_safetensors_metadata(out)
    assert meta["architecture"] == "EdgeRestoreNet"
    assert meta["task"] == "restore" and meta["scale"] == "2"
    assert meta["steps"] == "3" and meta["seed"] == "5"
    assert json.loads(meta["config"]) == {"in_channels": 3, "channels": 4, "num_convs": 1, "scale": 2}
    model = load_edgenet_safetensors(out)
    assert model.config["channels"] == 4 and not model.training
    y = model(torch.rand(1, 3, 8, 8))
    assert y.shape == (1, 3, 16, 16)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # atomic writes left nothing
    ckpt = torch.load(checkpoint_path(out), weights_only=True)
    assert ckpt["step"] == 3


def test_training_is_deterministic(data_dir, tmp_path):
    a = train_supervised([data_dir], tmp_path / "a.safetensors", steps=2, **FAST)
    b = train_supervised([data_dir], tmp_path / "b.safetensors", steps=2, **FAST)
    sa, sb = load_edgenet_safetensors(a).state_dict(), load_edgenet_safetensors(b).state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.read_bytes() == b.read_bytes()  # byte-identical files (sorted metadata header)


def test_resume_continues_at_the_checkpointed_step(data_dir, tmp_path, monkeypatch):
    reference = train_supervised([data_dir], tmp_path / "ref.safetensors", steps=3, resume=False, **FAST)

    seen: list[int] = []
    real_make_batch = train_mod.make_batch

    def interrupted(images, seed, step, *args, **kwargs):
        seen.append(step)
        if step == 2:
            raise KeyboardInterrupt  # Ctrl-C during the third step
        return real_make_batch(images, seed, step, *args, **kwargs)

    out = tmp_path / "m.safetensors"
    monkeypatch.setattr(train_mod, "make_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_supervised([data_dir], out, steps=3, checkpoint_every=10, **FAST)
    assert seen == [0, 1, 2]
    assert torch.load(checkpoint_path(out), weights_only=True)["step"] == 2
    assert not out.exists()

    def recording(images, seed, step, *args, **kwargs):
        seen.append(step)
        return real_make_batch(images, seed, step, *args, **kwargs)

    seen.clear()
    monkeypatch.setattr(train_mod, "make_batch", recording)
    train_supervised([data_dir], out, steps=3, **FAST)
    assert seen == [2]  # only the missing step ran
    resumed, ref = load_edgenet_safetensors(out).state_dict(), load_edgenet_safetensors(reference).state_dict()
    for k in ref:  # same batches, same optimizer state: same weights as the uninterrupted run
        torch.testing.assert_close(resumed[k], ref[k], rtol=1e-5, atol=1e-6)

    seen.clear()
    train_supervised([data_dir], out, steps=3, **FAST)  # already done: nothing to train
    assert seen == []


def test_resume_refuses_a_checkpoint_from_other_settings(data_dir, tmp_path):
    out = train_supervised([data_dir], tmp_path / "m.safetensors", steps=1, **FAST)
    with pytest.raises(BadInputError, match="seed"):
        train_supervised([data_dir], out, steps=2, seed=1, **FAST)


def test_empty_or_missing_folder_is_bad_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="no images"):
        train_supervised([empty], tmp_path / "m.safetensors", steps=1, **FAST)
    with pytest.raises(BadInputError, match="not found"):
        train_supervised([tmp_path / "missing"], tmp_path / "m.safetensors", steps=1, **FAST)


def test_all_images_excluded_or_too_small_is_bad_input(data_dir, tmp_path):
    with pytest.raises(BadInputError, match="no usable training image"):
        train_supervised([data_dir], tmp_path / "m.safetensors", steps=1, exclude={"img0.png", "img1.png"}, **FAST)
    big = {**FAST, "patch_size": 64}
    with pytest.raises(BadInputError, match="no usable training image"):
        train_supervised([data_dir], tmp_path / "m.safetensors", steps=1, **big)


def test_loader_rejects_other_architectures(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"architecture": "SRVGGNetCompact", "config": "{}"})
    with pytest.raises(BadInputError, match="EdgeRestoreNet"):
        load_edgenet_safetensors(path)
