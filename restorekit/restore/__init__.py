"""The old-photo pipeline (assess, defects, inpaint, restore, faces, tone, cast, sr) over bundles or models."""
