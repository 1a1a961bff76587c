"""What a training run is: the run and its record (``run``), DDP ranks started by Lightning
(``ddp``), the callbacks every run uses, which checkpoint a run resumes from (``resume``), the
global generators' states a mid-epoch checkpoint carries (``seeding``) and the checks that run
before any data is read (``preflight``). What the machine computes natively is
``cxrnet.hardware``: evaluation passes ask it too."""
