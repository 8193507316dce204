"""Bundles: a model file plus ``manifest.json`` (checksums, io contract, tiling, metrics).

``restorekit.bundle.manifest`` is torch-free (the runtime reads it on edge boxes);
``restorekit.bundle.build`` drives conversion and validation and needs the ``all`` extra.
"""
