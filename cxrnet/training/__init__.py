"""What a training run is: the run and its record (``run``), DDP ranks started by Lightning
(``ddp``), the callbacks every run uses, which checkpoint a run resumes from (``resume``), the
(seed, epoch) seeds (``seeding``), what the hardware computes natively (``hardware``) and the
checks that run before any data is read (``preflight``)."""
