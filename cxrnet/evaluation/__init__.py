"""Arithmetic on predictions and records: probabilities, confusion counts, thresholds, curves,
bootstrap intervals, calibration, subgroups, the report's numbers, figures and model card. It
runs no network and reads no checkpoint (``cxrnet.passes`` does, and hands it the arrays)."""
