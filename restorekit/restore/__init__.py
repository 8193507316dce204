"""The old-photo pipeline: stages (assess, defects + inpaint, restore, faces, tone, cast, sr) over
bundles or models (``pipeline``), the models it runs (``models``), and the photo / folder driver
(``folder``). Everything but the PyTorch fallback of ``models`` runs with the runtime extra alone."""
