"""The bundle format: a model file plus ``manifest.json`` (checksums, io contract, tiling, metrics).

Torch-free: an edge box reads and verifies manifests with only the ``runtime`` extra. The
format is described in ``docs/bundle-format.md``; the pipeline that writes bundles is
``restorekit.build``.
"""
