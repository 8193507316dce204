"""Evaluation: fidelity of a bundle vs the PyTorch reference, and latency, side by side."""
