"""distill: teacher -> named edge student; output reloads, resumes bit-exactly, DDP matches one
process, bad input fails before training, QAT is recorded. Tiny runs on the real Compact teacher."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("spandrel")

from restorekit.training import distill as distill_mod  # noqa: E402
from restorekit.training.distill import distill  # noqa: E402
from restorekit.training.loop import checkpoint_path  # noqa: E402
from restorekit.core.errors import BadInputError, RestorekitError  # noqa: E402
from restorekit.models.builtin import read_safetensors_metadata  # noqa: E402
from restorekit.models.students import STUDENTS, build_student, student_names  # noqa: E402
from restorekit.training.workers import SampleWorkers  # noqa: E402
from tests.conftest import REALESR, ROOT, SAMPLES, need_shared  # noqa: E402

TINY = dict(batch_size=2, patch_size=12, val_every=3, val_crops=2, progress=False, device="cpu", workers=0)


@pytest.fixture(scope="module")
def teacher():
    return str(need_shared(REALESR))


def test_registry_names_macs_and_errors():
    from restorekit.models.loader import count_macs
    from restorekit.models.students import COMPACT_MACS_PER_MEGAPIXEL, student_spec

    assert student_names()[:3] == ["edge-s-x1", "edge-s-x2", "edge-s-x4"] and len(STUDENTS) == 9
    for name, spec in STUDENTS.items():
        net = build_student(name)
        assert net.scale == spec.scale and count_macs(net) == pytest.approx(spec.macs_per_megapixel)
        if name.startswith("edge-s"):
            assert spec.macs_per_megapixel <= COMPACT_MACS_PER_MEGAPIXEL / 8
    with pytest.raises(BadInputError, match=r"did you mean 'edge-s-x4'.*known: edge-s-x1"):
        student_spec("edge-s-x3")


def test_distill_writes_a_student_that_loads_back(teacher, tmp_path):
    from restorekit.models.loader import count_macs, load_model

    out = tmp_path / "s.safetensors"
    res = distill(teacher, "edge-s-x4", [SAMPLES], out, steps=4, **TINY)
    assert res.out == out and out.is_file() and res.card == tmp_path / "s.md" and res.card.is_file()
    assert len(res.losses) == 4 and [r["step"] for r in res.val] == [0, 3, 4]
    meta = read_safetensors_metadata(out)
    assert meta["architecture"] == "EdgeRestoreNet" and meta["student"] == "edge-s-x4" and meta["qat"] == "false"
    assert meta["steps"] == "4" and meta["seed"] == "0" and len(meta["teacher_sha256"]) == 64
    assert len(meta["data_fingerprint"]) == 64 and float(meta["val_psnr_student_db"]) > 10
    loaded = load_model(out)
    assert loaded.spec.architecture == "EdgeRestoreNet" and loaded.spec.scale == 4
    assert loaded.module(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)
    teacher_macs = count_macs(load_model(teacher).module)
    assert count_macs(loaded.module) <= teacher_macs / 8 and loaded.spec.macs_per_megapixel <= teacher_macs / 8
    card = res.card.read_text()
    assert "realesr-animevideov3" in card and meta["teacher_sha256"] in card and meta["data_fingerprint"] in card
    assert "held out: rocket.jpg" in card and "| 3 |" in card and "bicubic" in card
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.slow  # three distillations with Real-ESRGAN Compact as the teacher
def test_interrupted_runs_resume_bit_exactly_and_qat_is_recorded(teacher, tmp_path, monkeypatch):
    kw = dict(steps=3, qat=True, qat_steps=2, **TINY)
    ref = distill(teacher, "edge-s-x4", [SAMPLES], tmp_path / "ref.safetensors", resume=False, **kw)
    meta = read_safetensors_metadata(ref.out)
    assert meta["qat"] == "true" and meta["qat_steps"] == "2" and len(ref.losses) == 5
    assert "psnr_fakequant" in ref.val[-1] and "QAT" in ref.card.read_text()

    real, seen = SampleWorkers.get, []

    def interrupting(stop):
        def get(self, words):
            step = words[0][1]
            seen.append(step)
            if step == stop:
                raise KeyboardInterrupt
            return real(self, words)
        return get

    out = tmp_path / "m.safetensors"
    for stop in (1, 4):  # once in the float phase, once in the QAT phase
        monkeypatch.setattr(SampleWorkers, "get", interrupting(stop))
        with pytest.raises(KeyboardInterrupt):  # samples made by a worker process here (the reference: in-process)
            distill(teacher, "edge-s-x4", [SAMPLES], out, **{**kw, "workers": 1})
        assert torch.load(checkpoint_path(out), weights_only=True)["step"] == stop and not out.exists()
    monkeypatch.setattr(SampleWorkers, "get", interrupting(-1))
    seen.clear()
    res = distill(teacher, "edge-s-x4", [SAMPLES], out, **{**kw, "workers": 1})
    assert seen == [4]  # only the missing step ran
    assert res.losses == ref.losses and res.val == ref.val
    assert out.read_bytes() == ref.out.read_bytes()  # same weights and metadata, bit for bit
    with pytest.raises(BadInputError, match="seed"):  # a checkpoint of other settings is refused
        distill(teacher, "edge-s-x4", [SAMPLES], out, **{**kw, "seed": 1})


@pytest.mark.slow  # two torch.distributed processes and one more run
def test_ddp_two_processes_match_one_process_on_the_same_global_batch(teacher, tmp_path):
    kw = dict(steps=3, batch_size=4, patch_size=12, val_every=100, val_crops=1, progress=False, device="cpu")
    single = distill(teacher, "edge-s-x4", [SAMPLES], tmp_path / "one.safetensors", **kw)
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from restorekit.training.distill import distill
        r = distill(sys.argv[1], "edge-s-x4", [sys.argv[2]], sys.argv[3], **{kw!r})
        assert r.world_size == 2, r.world_size
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                           str(script), teacher, str(SAMPLES), str(tmp_path / "two.safetensors")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = torch.load(checkpoint_path(tmp_path / "two.safetensors"), weights_only=True)
    assert two["step"] == 3
    torch.testing.assert_close(two["losses"].float(), torch.tensor(single.losses), rtol=1e-4, atol=1e-6)
    one = torch.load(checkpoint_path(single.out), weights_only=True)["model"]
    for k, v in one.items():
        torch.testing.assert_close(two["model"][k], v, rtol=1e-3, atol=1e-5)


def test_bad_input_fails_before_training(teacher, tmp_path, monkeypatch):
    from restorekit.cli.train import distill as distill_command

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(distill_mod, "distill_batch", no_training)
    out = tmp_path / "bad.safetensors"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match=r"x4 but the student is x2"):
        distill(teacher, "edge-s-x2", [SAMPLES], out, steps=2, **TINY)
    with pytest.raises(BadInputError, match="no images"):
        distill(teacher, "edge-s-x4", [empty], out, steps=2, **TINY)
    with pytest.raises(BadInputError, match="unknown student 'tiny-x4'"):
        distill(teacher, "tiny-x4", [SAMPLES], out, steps=2, **TINY)
    with pytest.raises(BadInputError, match="multiple of the number of processes"):
        monkeypatch.setenv("WORLD_SIZE", "2")
        distill(teacher, "edge-s-x4", [SAMPLES], out, steps=2, **{**TINY, "batch_size": 3})
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(RestorekitError, match="unknown student"):
        distill_command(teacher, [SAMPLES], out, student="edge-q-x4")
    with pytest.raises(RestorekitError, match="degradation"):
        distill_command(teacher, [SAMPLES], out, degradation="third-order")
    assert not out.exists() and not checkpoint_path(out).exists() and not out.with_suffix(".md").exists()


def test_cli_takes_the_teacher_option_and_a_folder_of_collections(teacher, tmp_path):
    """The issue's command shape: --teacher, and --data ../shared/photos (images only in sub-folders)."""
    from typer.testing import CliRunner

    from restorekit.cli.main import app
    from tests.conftest import SHARED

    photos = need_shared(SHARED / "photos")
    out = tmp_path / "s.safetensors"
    res = CliRunner().invoke(app, ["distill", "--teacher", teacher, "--student", "edge-s-x4", "--data", str(photos),
                                   "--steps", "2", "--batch-size", "2", "--patch-size", "12", "--val-every", "2",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    card = out.with_suffix(".md").read_text()
    n = int(card.split(" training images")[0].rsplit("| ", 1)[-1])
    assert n >= 20  # the collections under photos/ (old, faces, bw, whole, ...), not zero images


def test_pair_pool_is_a_pure_function_of_seed_and_step():
    """A pool rebuilt at step s (what a resumed run does) holds the bytes of one advanced from 0;
    slot contents follow the documented write order and targets are the label of the stored LR."""
    import numpy as np

    from restorekit.degrade.synthetic import to_uint8
    from restorekit.training.pool import POOL_TAG, PairPool, source_of_slot

    def draw(words):
        rng = np.random.default_rng(words)
        return rng.random((4, 4, 3), dtype=np.float32), rng.random((8, 8, 3), dtype=np.float32)

    def label(x):
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest") * 0.5

    def make():
        return PairPool(draw, label, seed=3, size=5, refresh=2, device="cpu", keep_hr=True)

    advanced = make()
    advanced.fill(0)
    assert torch.equal(advanced.lr[4], torch.from_numpy(to_uint8(draw([3, POOL_TAG, 4])[0])).permute(2, 0, 1))
    for t in range(7):
        advanced.advance(t)
    rebuilt = make()
    rebuilt.fill(7)
    for name in ("lr", "target", "hr"):
        assert torch.equal(getattr(advanced, name), getattr(rebuilt, name)), name
    # 14 writes so far: write 13 = step 6, j 1 went to slot 13 % 5 = 3; slot 4's last was write 9
    assert source_of_slot(3, 7, 5, 2) == (6, 1) and source_of_slot(4, 7, 5, 2) == (4, 1)
    assert source_of_slot(4, 2, 5, 2) is None  # writes 0..3 have not reached slot 4
    lr6, hr6 = draw([3, 6, 1])
    assert torch.equal(rebuilt.lr[3], torch.from_numpy(to_uint8(lr6)).permute(2, 0, 1))
    assert torch.equal(rebuilt.hr[3], torch.from_numpy(to_uint8(hr6)).permute(2, 0, 1))
    expected = (label(rebuilt.lr[3:4].float() / 255)[0] * 255).round().to(torch.uint8)
    assert torch.equal(rebuilt.target[3], expected)
    x, target, hr = rebuilt.batch(7, 4, rank=1, world_size=2)  # rank 1's half of a global batch of 4
    x_all, target_all, _ = rebuilt.batch(7, 4)
    assert x.shape == (2, 3, 4, 4) and torch.equal(x, x_all[2:]) and torch.equal(target, target_all[2:])
    assert target.shape == hr.shape == (2, 3, 8, 8) and float(x.max()) <= 1.0


@pytest.mark.slow  # two pooled distillations with Real-ESRGAN Compact as the teacher
def test_pooled_distillation_resumes_bit_exactly(teacher, tmp_path, monkeypatch):
    """With a pool of cached teacher outputs, an interrupted run rebuilds the pool and ends on the
    same bytes as an uninterrupted one; the card and metadata say a pool was used."""
    from restorekit.training.pool import PairPool

    kw = dict(steps=5, pool_size=6, pool_refresh=1, **TINY)
    ref = distill(teacher, "edge-s-x4", [SAMPLES], tmp_path / "ref.safetensors", resume=False, **kw)
    meta = read_safetensors_metadata(ref.out)
    assert meta["pool_size"] == "6" and meta["pool_refresh"] == "1"
    assert "pool of 6 cached teacher outputs (1 new per step)" in ref.card.read_text()

    real, seen = PairPool.advance, []

    def interrupting(self, step):
        seen.append(step)
        if step == 2:
            raise KeyboardInterrupt
        return real(self, step)

    out = tmp_path / "m.safetensors"
    monkeypatch.setattr(PairPool, "advance", interrupting)
    with pytest.raises(KeyboardInterrupt):
        distill(teacher, "edge-s-x4", [SAMPLES], out, **kw)
    monkeypatch.setattr(PairPool, "advance", real)
    res = distill(teacher, "edge-s-x4", [SAMPLES], out, **kw)
    assert res.losses == ref.losses and out.read_bytes() == ref.out.read_bytes()
    fresh = distill(teacher, "edge-s-x4", [SAMPLES], tmp_path / "f.safetensors", **{**kw, "pool_size": 0})
    assert fresh.losses != ref.losses  # the pool really changed what was trained on
    with pytest.raises(BadInputError, match="pool_size"):  # a checkpoint of other settings is refused
        distill(teacher, "edge-s-x4", [SAMPLES], out, **{**kw, "pool_size": 7})
    with pytest.raises(BadInputError, match="pool_refresh in"):
        distill(teacher, "edge-s-x4", [SAMPLES], tmp_path / "bad.safetensors", **{**kw, "pool_refresh": 7})


def test_qat_trains_against_the_int8_onnx_model(tmp_path):
    """The QAT phase's fake-quant student predicts the int8 ONNX model that ONNX Runtime runs
    with the activation ranges the run recorded in the weights' metadata. The built-in model is
    the teacher (no ../shared)."""
    import dataclasses
    import json

    import numpy as np

    pytest.importorskip("onnxruntime")
    from restorekit.build.convert import convert_model, open_converted
    from restorekit.core.metrics import psnr
    from restorekit.models.loader import load_model
    from restorekit.quantize.calibration import calibration_tiles
    from restorekit.quantize.recipe import recipe_from_dict
    from restorekit.training.distill import int8_simulation

    out = tmp_path / "s.safetensors"
    distill("default", "edge-s-x2", [SAMPLES], out, steps=12, qat=True, qat_steps=8, degradation="classic",
            **{**TINY, "patch_size": 16, "val_every": 100})
    ranges = json.loads(read_safetensors_metadata(out)["int8_activation_ranges"])
    student = load_model(out)
    assert set(ranges) == {n for n, m in student.module.named_modules() if isinstance(m, torch.nn.Conv2d)}
    tiles = calibration_tiles(SAMPLES, tile=32, count=8)
    recipe = dataclasses.replace(recipe_from_dict({"scheme": "w8a8", "float_preparation": False}),
                                 activation_ranges=ranges)
    conv = convert_model(student.module, student.spec, "onnx", tmp_path, "int8", tile=32, calib=tiles, recipe=recipe)
    sess = open_converted("onnx", conv)
    sim = int8_simulation(student.module, tiles)
    sim.use_activation_ranges(ranges)
    with torch.no_grad(), sim as fq:
        agreement = float(np.mean([psnr(fq(torch.from_numpy(t)).numpy(), sess.run(t)) for t in tiles]))
    # Measured on this run: 71.1 dB. torch.ao FakeQuantize numerics (moving-average observers, uint8
    # only after each ReLU) agree with the same kind of export to 60.7 dB, no closer than the float
    # student itself (60.7 dB): the bar sits between.
    assert agreement > 65.0, agreement


def test_samples_are_the_same_whatever_the_number_of_workers():
    """Sample ``words`` is a pure function of its words: made in this process, by one worker or by
    four, the (LR, HR) pairs are bit-identical, in the order asked (also when asked ahead)."""
    rng = np.random.default_rng(5)
    images = [rng.random((40, 56, 3), dtype=np.float32), rng.random((48, 48, 3), dtype=np.float32)]
    words = [[7, step, i] for step in range(3) for i in range(4)]
    made = {}
    for workers in (0, 1, 4):
        with SampleWorkers(images, 8, 2, "second-order", workers=workers) as samples:
            samples.ahead(words[4:])  # some made ahead, the first ones on demand
            made[workers] = samples.get(words)
    for workers in (1, 4):
        for (lr0, hr0), (lr, hr) in zip(made[0], made[workers]):
            assert lr.shape == (8, 8, 3) and hr.shape == (16, 16, 3)
            assert np.array_equal(lr0, lr) and np.array_equal(hr0, hr)
    assert not np.array_equal(made[0][0][0], made[0][1][0])  # different words, different samples


def test_a_negative_worker_count_is_refused_before_training(tmp_path):
    with pytest.raises(BadInputError, match="workers must be >= 0"):
        SampleWorkers([np.zeros((32, 32, 3), np.float32)], 8, 2, "classic", workers=-1)
    from typer.testing import CliRunner

    from restorekit.cli.main import app

    res = CliRunner().invoke(app, ["distill", "--teacher", "x.pth", "--data", str(tmp_path), "--out",
                                   str(tmp_path / "s.safetensors"), "--workers", "-1"])
    assert res.exit_code == 2 and "--workers" in res.output
