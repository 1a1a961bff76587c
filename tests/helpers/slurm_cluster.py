"""A single-node Slurm cluster on localhost, from Debian's slurm-wlm and munge, for the tests.

Started once per test session by the ``slurm_cluster`` fixture (tests/conftest.py) and stopped
at its end: slurmd and slurmctld first, then munged if this module started it, each waited for.
Everything the cluster writes (state, spool, logs, its slurm.conf) lives in one temporary
folder; ``SLURM_CONF`` in ``env`` points the Slurm commands at it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel")
MUNGE_KEY = Path("/etc/munge/munge.key")


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here (not installed, not root, or the daemons do not start)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _find(name: str) -> str:
    for folder in (None, "/usr/sbin", "/usr/bin"):
        found = shutil.which(name, path=folder)
        if found:
            return found
    raise SlurmUnavailable(f"{name} not found (apt-get install slurm-wlm munge)")


def _munge_works() -> bool:
    try:
        token = subprocess.run([_find("munge"), "-n"], capture_output=True, timeout=10)
        check = subprocess.run(
            [_find("unmunge")], input=token.stdout, capture_output=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError, SlurmUnavailable):
        return False
    return token.returncode == 0 and check.returncode == 0


def _stop(process: subprocess.Popen, timeout: float = 15) -> None:
    # Waited for through its Popen: a daemon that exited stays a zombie until reaped, and a
    # zombie still answers os.kill(pid, 0), so polling the PID would wait out the timeout.
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class SlurmCluster:
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self) -> SlurmCluster:
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmd and munged needs root")
        for name in DAEMONS:
            _find(name)
        self._start_munge()
        conf = self._write_conf()
        self.env = {**os.environ, "SLURM_CONF": str(conf)}
        for name, args in (("slurmctld", []), ("slurmd", ["-N", "localhost"])):
            # -D keeps each daemon in the foreground of its own process, so its PID is ours.
            process = subprocess.Popen(
                [_find(name), "-D", *args],
                env=self.env,
                stdout=(self.root / f"{name}.out").open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.processes[name] = process
        self._wait_until_idle()
        return self

    def _start_munge(self) -> None:
        if _munge_works():
            return  # a munged is already running; not ours to stop
        if not MUNGE_KEY.is_file():
            MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
            MUNGE_KEY.write_bytes(os.urandom(1024))
        munge = pwd.getpwnam("munge")
        for folder in (
            Path("/run/munge"),
            MUNGE_KEY.parent,
            Path("/var/log/munge"),
            Path("/var/lib/munge"),
        ):
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, munge.pw_uid, munge.pw_gid)
        os.chown(MUNGE_KEY, munge.pw_uid, munge.pw_gid)
        MUNGE_KEY.chmod(0o400)
        process = subprocess.Popen(
            [_find("munged"), "--foreground"],
            user=munge.pw_uid,
            group=munge.pw_gid,
            stdout=(self.root / "munged.out").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes["munged"] = process
        deadline = time.monotonic() + 10
        while not _munge_works():
            if time.monotonic() > deadline or process.poll() is not None:
                raise SlurmUnavailable(
                    f"munged did not start: {(self.root / 'munged.out').read_text()[-500:]}"
                )
            time.sleep(0.2)

    def _write_conf(self) -> Path:
        for folder in ("state", "spool"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        node = "NodeName=localhost CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1"
        conf = self.root / "slurm.conf"
        conf.write_text(
            f"""ClusterName=cxrnettest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/slurmctld.log
SlurmdLogFile={self.root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
KillWait=5
MinJobAge=600
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
{node} RealMemory={min(4000, total_mb - 512)}
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        )
        return conf

    def _wait_until_idle(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.run(["sinfo", "-h", "-o", "%t"], check=False)
            if done.returncode == 0 and done.stdout.strip() in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"the Slurm node did not come up: {self.logs()}")

    def run(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_find(command[0]), *command[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def sbatch(self, script: Path, *options: str) -> str:
        done = self.run(["sbatch", "--parsable", *options, str(script)])
        return done.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as key=value pairs (JobState, Restarts, ExitCode, ...)."""
        done = self.run(["scontrol", "show", "job", "-o", job_id], check=False)
        return dict(re.findall(r"(\w+)=(\S*)", done.stdout))

    def wait(self, job_id: str, states: tuple[str, ...], timeout: float = 300) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} not in {states} after {timeout} s: {info}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-1500:]}"
            for path in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out"))
        )

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is not None:
                _stop(process)
