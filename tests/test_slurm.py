"""``bench tables --executor slurm`` against a real single-node SLURM cluster.

Enabled by ``pytest --run-slurm`` (marker ``slurm``); needs Debian's ``slurm-wlm`` and ``munge``
(``apt-get install -y slurm-wlm munge``) and root or a user that may start the daemons. The
fixture writes a munge key and a ``slurm.conf`` into a temporary folder, starts ``munged``,
``slurmctld`` and ``slurmd`` there, on loopback and free ports, with every state, spool, pid
and log file inside that folder (nothing in /etc, /var or /run is touched), and stops them at
the end. Where a binary is missing the test is skipped, and the skip says which.

There is no accounting database (slurmdbd needs MySQL), so ``sacct`` cannot answer; the
executor watches ``squeue`` to notice a job that ended without a result.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
# Record fields that legitimately differ between two runs of the same rows.
_TIMING_FIELDS = {"created", "environment", "run_id", "wall_time_s", "train_time_s", "eval_time_s"}

pytestmark = pytest.mark.slurm


def _which(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)),
                                      None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Cluster:
    """munged + slurmctld + slurmd of a one-node cluster living in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _start(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.stdout", "w")
        self.procs.append(subprocess.Popen([_which(name) or name, *args], stdout=log, stderr=subprocess.STDOUT,
                                           env=self.env, start_new_session=True))

    def start(self) -> None:
        r = self.root
        for d in ("munge", "state", "spool"):
            (r / d).mkdir(mode=0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = r / "munge" / "munge.socket"
        self._start("munged", "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
                    f"--pid-file={r / 'munge' / 'munged.pid'}", f"--log-file={r / 'munge' / 'munged.log'}",
                    f"--seed-file={r / 'munge' / 'munged.seed'}")
        self._wait(lambda: sock.exists(), "munged socket", 30)
        host = socket.gethostname().split(".")[0]
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "root")
        self.conf.write_text("\n".join([
            "ClusterName=wcctest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={sock}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'slurmd.log'}",
            "ProctrackType=proctrack/pgid",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "ReturnToService=2",
            # The executor asks 8 CPUs per row; let the node declare more than this machine has.
            "SlurmdParameters=config_overrides",
            # A cancelled parent's dependants would otherwise wait forever.
            "DependencyParameters=kill_invalid_depend",
            "MailProg=/bin/true",
            "NodeName=wccnode NodeAddr=127.0.0.1 CPUs=16 RealMemory=4000 State=UNKNOWN",
            "PartitionName=wcc Nodes=wccnode Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")
        self._start("slurmctld", "-D", "-c", "-f", str(self.conf))
        self._start("slurmd", "-D", "-N", "wccnode", "-f", str(self.conf))
        self._wait(self._node_idle, "the node to come up (sinfo: idle)", 90)

    def _node_idle(self) -> bool:
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return res.returncode == 0 and res.stdout.strip() in ("idle", "mixed", "allocated")

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.5)
        raise RuntimeError(f"SLURM test cluster: timed out waiting for {what}; exited: {dead}\n{self.logs()}")

    def logs(self) -> str:
        out = []
        logs = sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.stdout"))
        for p in logs + [self.root / "munge" / "munged.log"]:
            if p.is_file():
                out.append(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)

    def squeue(self) -> list[tuple[str, str]]:
        res = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=self.env, capture_output=True, text=True)
        return [tuple(line.split()) for line in res.stdout.splitlines() if line.strip()]

    def stop(self) -> None:
        subprocess.run(["scancel", "--user", os.environ.get("USER", "root")], env=self.env, capture_output=True)
        for p in reversed(self.procs):  # slurmd, slurmctld, then munged
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


@pytest.fixture
def cluster(tmp_path_factory):
    missing = [b for b in _BINARIES if _which(b) is None]
    if missing:
        pytest.skip(f"SLURM binaries not found: {', '.join(missing)} (apt-get install -y slurm-wlm munge)")
    c = _Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _tables(env: dict[str, str], out: Path, results: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", "tables", "--profile", "smoke", "--tables", "kitti",
                             "--no-progress", "--out", str(out), "--results", str(results), *extra],
                            cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _records(results: Path) -> dict[str, dict]:
    """Records by row, without the fields that depend on when and where they were made."""
    out = {}
    for p in sorted((results / "tables").glob("*.json")):
        rec = json.loads(p.read_text())
        out[rec["row"]["id"]] = {k: v for k, v in rec.items() if k not in _TIMING_FIELDS}
    return out


def test_slurm_cancel_resume_equals_local(cluster, tmp_path):
    """Submit the KITTI smoke table to SLURM, scancel a running row, resume: same records as a local run."""
    slurm_args = ("--executor", "slurm", "--partition", "wcc", "--gpus-per-job", "0", "--timeout-min", "30")
    out, results = tmp_path / "out", tmp_path / "results"
    # One thread everywhere: once in CI the resumed rows differed from the local run's in the last
    # digits. Likely (not proven): rows of the two chains run at once on this node, and a BLAS that
    # picks its thread count by load sums in another order. That is not what this test is about.
    env = {**cluster.env, **_ONE_THREAD}
    first = _tables(env, out, results, *slurm_args)
    cancelled = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None and cancelled is None:
        running = [job for job, state in cluster.squeue() if state == "RUNNING"]
        # Cancel a row that has started training (its checkpoint folder exists), so the
        # resume has real work to continue.
        if running and list((out / "work").glob("kitti/*/last.pt")):
            cancelled = running[0]
            subprocess.run(["scancel", cancelled], env=cluster.env, check=True)
        time.sleep(0.2)
    assert cancelled is not None, "no SLURM job was seen running:\n" + (first.communicate()[0] or "")
    log1 = first.communicate(timeout=600)[0]
    assert first.returncode == 2, log1  # the driver notices the lost job and says how to resume
    assert "without a result" in log1 and "Rerun the same command" in log1
    assert len(_records(results)) < 7

    second = _tables(env, out, results, *slurm_args)
    log2 = second.communicate(timeout=900)[0]
    assert second.returncode == 0, log2 + "\n" + cluster.logs()
    assert "submitted kitti" in log2

    local_out, local_results = tmp_path / "local-out", tmp_path / "local-results"
    local = _tables({**os.environ, **_ONE_THREAD}, local_out, local_results)
    log3 = local.communicate(timeout=900)[0]
    assert local.returncode == 0, log3
    slurm_recs, local_recs = _records(results), _records(local_results)
    assert len(slurm_recs) == 7
    assert slurm_recs == local_recs
