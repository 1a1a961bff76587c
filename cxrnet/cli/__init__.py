"""The command-line entry points: the only modules that know Hydra (or argparse)."""
