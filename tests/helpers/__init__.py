"""Code the tests share: console scripts, callbacks for training subprocesses, a Slurm cluster.

Imported as ``helpers.<module>``: pytest puts ``tests/`` on ``sys.path`` (rootdir conftest, no
``tests/__init__.py``), and subprocesses that load a callback from here get it on ``PYTHONPATH``.
"""
