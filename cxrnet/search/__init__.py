"""Hyperparameter search with Optuna: space, study bookkeeping, pruning, summary."""
