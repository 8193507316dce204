"""Synthetic degradations: turn clean photos into the damaged, aged or low-resolution inputs a
restoration model meets in the wild (training data, previews, evaluation)."""
