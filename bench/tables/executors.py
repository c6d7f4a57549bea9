"""Where table rows run: in this process (local, the default) or as SLURM jobs via submitit.

Both run the same :func:`bench.tables.run_row` per row and respect the stage graph (a row
starts only after its parent finished). On SLURM every row is submitted at once, each with an
``afterok`` dependency on its parent's job; with submitit's ``local`` cluster (used by the
tests, and handy on a workstation) there are no dependencies, so rows are submitted in waves.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from bench.tables.run import RowJob, run_row

__all__ = ["LocalExecutor", "SubmititExecutor"]

Report = Callable[[str], None]


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

    def run(self, jobs: list[RowJob]) -> list[dict[str, Any]]:
        by_key = {(j.table, j.row_id): j for j in jobs}
        submitted: dict[tuple[str, str], Any] = {}
        if self.cluster == "slurm":
            for job in jobs:  # jobs come parents-first
                parent = submitted.get((job.table, job.parent)) if job.parent else None
                submitted[(job.table, job.row_id)] = self._submit(job, parent)
                self.report(f"submitted {job.label}: job {submitted[(job.table, job.row_id)].job_id}")
            return [submitted[k].result() for k in by_key]
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
