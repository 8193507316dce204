"""The ground floor, torch-free: errors, atomic file writes, image I/O, metrics and the target table."""
