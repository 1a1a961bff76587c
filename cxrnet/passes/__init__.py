"""Passes: what loads a checkpoint, builds the data, runs the network over films and writes the
report. The evaluation pass after training and in ``cxrnet-eval`` (``evaluation_pass``,
``predictions``, ``checkpoint_eval``), a test-only site's pass (``site_pass``) and the fold
ensemble (``fold_ensemble`` finds and pools the folds, ``ensemble_folder`` writes what
``cxrnet-ensemble`` leaves). The numbers themselves are
``cxrnet.evaluation``'s, which runs no network and reads no checkpoint."""
