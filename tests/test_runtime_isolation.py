"""The runtime extra alone (numpy, OpenCV, onnxruntime, ai-edge-litert, typer, rich) runs ONNX and
TFLite bundles: proved in a subprocess where every other heavy package fails to import."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from restorekit.core.image import read_image, write_image

BLOCKED = ["torch", "torchvision", "spandrel", "spandrel_extra_arches", "coremltools", "litert_torch",
           "ai_edge_quantizer", "onnx", "onnxscript", "nncf", "safetensors", "skimage", "matplotlib", "yaml",
           "jax", "tensorflow", "scipy"]

BLOCKER = textwrap.dedent(f"""
    import sys, importlib.abc
    BLOCKED = {BLOCKED!r}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in BLOCKED:
                raise ImportError(f'{{name}} is not part of restorekit[runtime]')
    sys.meta_path.insert(0, Block())
""")


def _run_isolated(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


def test_runtime_runs_onnx_and_tflite_without_torch(edge_bundles, tmp_path, rgb_photo):
    src = tmp_path / "in.png"
    write_image(src, rgb_photo[:80, :96])
    code = f"""
        import sys
        from restorekit.runtime import load_bundle
        from restorekit.core.image import read_image, write_image
        photo = read_image({str(src)!r})
        for name in ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"):
            b = load_bundle({str(edge_bundles)!r} + "/" + name)
            out = b.restore_photo(photo)
            write_image({str(tmp_path)!r} + f"/{{name}}.png", out.rgb)
        sys.argv = ["restorekit", "restore", {str(src)!r}, "-o", {str(tmp_path / "restored.png")!r},
                    "--bundle", {str(edge_bundles / "tflite-int8")!r}, "--stages", "restore,tone,cast"]
        from restorekit.cli.main import main
        try:
            main()
        except SystemExit as e:
            assert not e.code, e.code
        sys.argv = ["restorekit", "run", {str(edge_bundles / "onnx-fp32")!r}, {str(src)!r},
                    "-o", {str(tmp_path / "cli.png")!r}]
        try:
            main()
        except SystemExit as e:  # typer always exits: check the code, then go on to the assert
            assert not e.code, e.code
        assert "torch" not in sys.modules, "a runtime path imported torch"
        print("NO-TORCH-OK")
    """
    res = _run_isolated(code)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "NO-TORCH-OK" in res.stdout  # the script ran to its last line
    assert read_image(tmp_path / "restored.png").size == (80, 96)  # the pipeline, same size as the input
    for name in ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8", "cli"):
        out = read_image(tmp_path / f"{name}.png")
        assert out.size == (160, 192)
        assert np.isfinite(out.rgb).all() and out.rgb.std() > 0.05


def test_default_pipeline_runs_from_the_main_job_bundles_without_torch(edge_bundles, tmp_path, rgb_photo):
    """The main job also bundles the scratch detector: `restore --bundles DIR` on a torch-free box
    runs every default stage from the bundles, picked by task."""
    import json

    src = tmp_path / "in.png"
    write_image(src, rgb_photo[:96, :128])
    log = tmp_path / "log.json"
    code = f"""
        import sys
        sys.argv = ["restorekit", "restore", {str(src)!r}, "-o", {str(tmp_path / "out.png")!r},
                    "--bundles", {str(edge_bundles.parent)!r}, "--target", "tflite", "--json", {str(log)!r}]
        from restorekit.cli.main import main
        try:
            main()
        except SystemExit as e:
            assert not e.code, e.code
        assert "torch" not in sys.modules, "a runtime path imported torch"
        print("NO-TORCH-OK")
    """
    res = _run_isolated(code)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "NO-TORCH-OK" in res.stdout
    st = {s["stage"]: s for s in json.loads(log.read_text())["photos"][0]["stages"]}
    assert st["defects"]["ran"] and st["defects"]["backend"].startswith("scratch_unet tflite-fp32")
    assert st["restore"]["ran"] and st["restore"]["backend"].startswith("restorekit-x2 tflite-int8")


def test_missing_stage_bundle_names_the_stage_and_the_command(edge_bundles, tmp_path):
    from typer.testing import CliRunner

    from restorekit.cli.main import app

    only_restorer = tmp_path / "b"
    only_restorer.mkdir()
    (only_restorer / "restorekit-x2").symlink_to(edge_bundles)
    src = tmp_path / "in.png"
    write_image(src, np.full((32, 32, 3), 0.5, np.float32))
    res = CliRunner().invoke(app, ["restore", str(src), "-o", str(tmp_path / "o.png"),
                                   "--bundles", str(only_restorer)])
    assert res.exit_code == 2
    assert "no scratch bundle for onnx" in res.output and "defects stage" in res.output
    assert "restorekit bundle --targets onnx" in res.output


def test_blocker_really_blocks():
    res = _run_isolated("import torch")
    assert res.returncode != 0 and "not part of restorekit[runtime]" in res.stderr


def test_bench_runs_on_the_runtime_extra_alone(edge_bundles):
    """An edge box can benchmark its bundles: `bench --no-reference` and the worker, without torch."""
    code = f"""
        import sys
        from restorekit.eval.bench_worker import measure, measure_peak
        for name in ("onnx-int8", "tflite-int8"):
            r = measure({{"kind": "bundle", "path": {str(edge_bundles)!r} + "/" + name, "provider": "cpu",
                         "size": [128, 128], "runs": 2, "warmup": 1, "threads": 1}})
            assert len(r["latencies_ms"]) == 2 and r["peak_rss_kb"] > 0, r
        assert measure_peak(1, n=256, repeats=2)["gflops"] > 0
        sys.argv = ["restorekit", "bench", {str(edge_bundles / "onnx-int8")!r}, "--no-reference",
                    "--runs", "2", "--warmup", "0"]
        from restorekit.cli.main import main
        try:
            main()
        except SystemExit as e:
            assert not e.code, e.code
        assert "torch" not in sys.modules
        print("NO-TORCH-OK")
    """
    res = _run_isolated(code)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "onnx-int8" in res.stdout and "p99 ms" in res.stdout and "NO-TORCH-OK" in res.stdout


def test_restore_package_imports_without_torch():
    """The old-photo pipeline on bundles (stages, faces, defects, model resolution, folder driver) is torch-free."""
    res = _run_isolated("""
        import sys
        import restorekit.restore.assess, restorekit.restore.defects, restorekit.restore.faces
        import restorekit.restore.folder, restorekit.restore.models, restorekit.restore.pipeline
        assert "torch" not in sys.modules
        print("NO-TORCH-OK")
    """)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "NO-TORCH-OK" in res.stdout
