"""Training students: supervised training on synthetic degradations and teacher -> student distillation."""
