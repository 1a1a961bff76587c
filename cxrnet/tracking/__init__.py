"""Experiment tracking: the W&B logger, offline unless credentials are present
(``wandb_logger``), and the callback that sends each run's report to W&B (``wandb_report``)."""
