"""Where table rows run: in this process (local, the default) or as SLURM jobs via submitit.

Both run the same :func:`bench.tables.run_row` per row and respect the stage graph (a row
starts only after its parent finished). On SLURM every row is submitted at once, each with an
``afterok`` dependency on its parent's job; with submitit's ``local`` cluster (used by the
tests, and handy on a workstation) there are no dependencies, so rows are submitted in waves.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench.tables.run import RowJob, run_row

__all__ = ["LocalExecutor", "SubmititExecutor", "JobLostError"]

Report = Callable[[str], None]


class JobLostError(RuntimeError):
    """A SLURM job ended (cancelled, failed, timed out, node lost) without leaving a result."""


# squeue states after which no result will come; a job also leaves squeue altogether after
# the controller's MinJobAge.
_ENDED = {"CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY",
          "COMPLETED", "REVOKED", "SPECIAL_EXIT"}


def _squeue_state(job_id: str) -> str | None:
    """The job's state as squeue reports it; "GONE" once the controller forgot it; None when
    squeue itself could not answer (keep waiting: the controller may be restarting)."""
    try:
        res = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return "GONE" if "Invalid job id" in res.stderr else None
    return res.stdout.strip().split("\n")[0].strip() or "GONE"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class LocalExecutor:
    """Runs the rows one after another in this process."""

    def __init__(self, report: Report = _say) -> None:
        self.report = report

    def run(self, jobs: list[RowJob]) -> list[dict[str, Any]]:
        records = []
        for i, job in enumerate(jobs, 1):
            self.report(f"[{i}/{len(jobs)}] {job.label} ...")
            records.append(run_row(job))
        return records


class SubmititExecutor:
    """Runs each row as a submitit job.

    Args:
        folder: where submitit keeps job scripts and logs.
        cluster: ``"slurm"`` or ``"local"`` (submitit's local executor: subprocesses here).
        partition / gpus_per_job / timeout_min / cpus_per_job: SLURM resources per row.
    """

    def __init__(self, folder: str | Path, cluster: str = "slurm", partition: str | None = None,
                 gpus_per_job: int = 1, timeout_min: int = 24 * 60, cpus_per_job: int = 8,
                 report: Report = _say) -> None:
        try:
            import submitit
        except ImportError as exc:
            raise RuntimeError("the SLURM executor needs submitit: pip install 'wcc-bench[bench]'") from exc
        if cluster not in ("slurm", "local"):
            raise ValueError(f"cluster must be 'slurm' or 'local', got {cluster!r}")
        if cluster == "slurm" and not partition:
            raise ValueError("--executor slurm needs --partition")
        self.cluster = cluster
        self.report = report
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params: dict[str, Any] = {"timeout_min": timeout_min, "name": "wcc-bench"}
        if cluster == "slurm":
            params.update(slurm_partition=partition, gpus_per_node=gpus_per_job, cpus_per_task=cpus_per_job,
                          tasks_per_node=1, nodes=1)
        self.params = params
        self.executor.update_parameters(**params)

    def _submit(self, job: RowJob, after: Any | None):
        if after is not None and self.cluster == "slurm":
            self.executor.update_parameters(**self.params,
                                            slurm_additional_parameters={"dependency": f"afterok:{after.job_id}"})
        else:
            self.executor.update_parameters(**self.params)
        return self.executor.submit(run_row, job)

    def _wait(self, sj: Any, job: RowJob, poll_s: float = 2.0, grace_s: float = 30.0) -> dict[str, Any]:
        """The row's record once its SLURM job is done.

        submitit learns a job's fate from ``sacct``; on a cluster without accounting storage
        that never answers, and a cancelled job would be waited for forever. So the queue is
        watched too: a job that left it (or ended) without a result, after a grace period for
        the result file to appear on a shared disk, is a :class:`JobLostError`.
        """
        ended_at = None
        while not sj.done():
            state = _squeue_state(sj.job_id)
            if state in _ENDED or state == "GONE":
                ended_at = ended_at or time.monotonic()
                if time.monotonic() - ended_at > grace_s:
                    raise JobLostError(
                        f"{job.label}: SLURM job {sj.job_id} ended ({state}) without a result (cancelled, failed "
                        f"or timed out; its log: {sj.paths.stderr}). Rerun the same command to resume: finished "
                        f"rows are reused, unfinished ones continue from their last checkpoint"
                    )
            time.sleep(poll_s)
        return sj.result()

    def run(self, jobs: list[RowJob]) -> list[dict[str, Any]]:
        by_key = {(j.table, j.row_id): j for j in jobs}
        submitted: dict[tuple[str, str], Any] = {}
        if self.cluster == "slurm":
            for job in jobs:  # jobs come parents-first
                parent = submitted.get((job.table, job.parent)) if job.parent else None
                submitted[(job.table, job.row_id)] = self._submit(job, parent)
                self.report(f"submitted {job.label}: job {submitted[(job.table, job.row_id)].job_id}")
            return [self._wait(submitted[k], by_key[k]) for k in by_key]
        # No dependencies on the local cluster: submit each wave of ready rows, wait, repeat.
        done: dict[tuple[str, str], dict[str, Any]] = {}
        pending = list(jobs)
        while pending:
            wave = [j for j in pending if j.parent is None or (j.table, j.parent) in done]
            if not wave:
                raise RuntimeError("stage graph has a missing parent")
            running = [(j, self._submit(j, None)) for j in wave]
            for j, sj in running:
                self.report(f"running {j.label} as job {sj.job_id}")
            for j, sj in running:
                done[(j.table, j.row_id)] = sj.result()  # re-raises the job's exception with its traceback
            pending = [j for j in pending if (j.table, j.row_id) not in done]
        return [done[k] for k in by_key]
