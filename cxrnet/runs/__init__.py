"""The run record: what every job writes to ``<run folder>/metrics.json`` and how tools read it.

One type, ``RunRecord``, for every kind of job (``cxrnet-train``, ``cxrnet-eval``, a search trial),
written whole or not at all by ``write_record`` and read back by ``read_record``. A job writes its
record twice: ``running`` when it starts (with its overrides, so a job killed before it finished is
still a job that tools can list) and its final status when it ends. ``RunRecorder`` does both and
turns whatever ended the job into a status: ``RunStopped`` carries one (a pruned trial is written
as ``pruned`` the first time), a signal or Ctrl-C is ``interrupted``, any other exception
``failed``.

Also here, because every tool that reads or writes jobs needs them: the one parser of Hydra
override strings (``Override``) and job-folder discovery (``find_job_dirs``). Study scripts
start their ``cxrnet-train -m`` sweeps through ``cxrnet.runs.sweeps``.
"""

from cxrnet.runs.folders import find_job_dirs, is_job_dir
from cxrnet.runs.overrides import (
    MISSING,
    Override,
    Value,
    format_override_value,
    format_overrides,
    lookup,
    overrides_as_dict,
    parse_value,
)
from cxrnet.runs.record import (
    RECORD_NAME,
    RecordError,
    RunRecord,
    RunStatus,
    RunStopped,
    read_record,
    status_for,
    write_record,
)
from cxrnet.runs.recorder import RECORDED_PACKAGES, RunRecorder, git_commit, installed_versions

__all__ = [
    "MISSING",
    "RECORDED_PACKAGES",
    "RECORD_NAME",
    "Override",
    "RecordError",
    "RunRecord",
    "RunRecorder",
    "RunStatus",
    "RunStopped",
    "Value",
    "find_job_dirs",
    "format_override_value",
    "format_overrides",
    "git_commit",
    "installed_versions",
    "is_job_dir",
    "lookup",
    "overrides_as_dict",
    "parse_value",
    "read_record",
    "status_for",
    "write_record",
]
