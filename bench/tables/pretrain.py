"""``python -m bench pretrain``: the SynthStreets FP32 checkpoint a table's rows start from.

The paper did not train its FP32 rows from scratch: it started from VainF's Cityscapes
checkpoint and fine-tuned the compressed rows from it (docs/design.md §4.1). On the synthetic
stand-in the same procedure needs a SynthStreets FP32 checkpoint made by this project's own
code; this command makes it, once, with a fixed seed:

* ``<out>/pretrain/<profile>-<table>-fp32.pt``: ``{"model_state": ...}`` (float16 by default, to
  keep it small; BatchNorm counters stay integers) plus the recipe, seed, commit, data and
  metrics - a file :meth:`wcc.models.DeepLabV3Plus.load_checkpoint` and ``bench tables
  --init-checkpoint`` read as they read VainF's;
* ``<same>.json``: the same facts and the checkpoint's sha256, readable without torch.

A profile with ``pretrain_steps`` (``bench tables``' default, ``synthetic-512``) takes, in order:
the file in ``<out>/pretrain/``; the one shipped with the repository in ``results/pretrain/``
(built by this command, committed with its ``.json``); else it builds the file once. A file is
used only when its ``.json`` records the recipe, steps and seed the profile asks for now (a
changed profile rebuilds rather than silently starting from another model), and a file whose
sha256 no longer matches its ``.json`` is an error, never silently reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wcc.train.recipe import Recipe

__all__ = ["SHIPPED_DIR", "pretrain_path", "pretrain_recipe", "ensure_pretrain", "build_pretrain"]

# The checkpoints committed with the repository (results/pretrain/, next to the results they
# start). Absent in an installed (non-editable) package: the profile then builds its own.
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "results" / "pretrain"


def configure(p: argparse.ArgumentParser) -> None:
    from bench.tables.profiles import DEFAULT_PROFILE, PROFILES

    p.description = (
        "Train a table's FP32 model on the profile's SynthStreets data with a fixed seed and save it as a "
        "checkpoint (float16 by default) with its recipe, seed, commit and sha256. bench tables profiles with a "
        "pretrain step build it themselves on first use; this command builds (or rebuilds) it explicitly.")
    p.add_argument("--tables", default="cityscapes,kitti", help="comma-separated subset (default: %(default)s)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                   help="whose data, recipe and step count (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps (default: the profile's pretrain steps, else its FP32 steps)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialization and the batches (default: 0)")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"],
                   help="dtype of the saved weights (default: %(default)s; float16 keeps the file small)")
    p.add_argument("--out", default="out/tables",
                   help="folder whose data/ holds (or receives) SynthStreets; the checkpoint goes to its pretrain/ "
                        "(default: %(default)s, the bench tables default)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--force", action="store_true", help="rebuild even when the checkpoint exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def pretrain_path(out: str | Path, profile_name: str, table: str) -> Path:
    return Path(out) / "pretrain" / f"{profile_name}-{table}-fp32.pt"


def pretrain_recipe(profile_name: str, table: str, steps: int | None = None, seed: int = 0) -> Recipe:
    """The recipe of a profile's pretrain of ``table``: its FP32 recipe with the pretrain steps
    (``steps``, else the profile's ``pretrain_steps``, else its FP32 steps) and ``seed``."""
    from bench.tables.profiles import get_profile

    profile = get_profile(profile_name)
    base = profile.recipes[table]
    n = steps or (profile.pretrain_steps or {}).get(table) or base.steps
    return base.replace(steps=n, seed=seed)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_pretrain(profile_name: str, table: str, out: str | Path, device: str, *, steps: int | None = None,
                   seed: int = 0, dtype: str = "float16", progress: bool = True, fresh: bool = False) -> Path:
    """Train the FP32 stage from random initialization and write the checkpoint and its ``.json``.

    The stage trains in a work folder named by seed and steps, so an interrupted build resumes;
    ``fresh`` discards that folder first (a rebuild from step 0).
    """
    import shutil

    from bench.environment import git_state
    from bench.tables.profiles import get_profile
    from bench.tables.run import record_metrics, table_data
    from bench.tables.sweeps import SWEEPS
    from wcc.models import paper_keep_fp
    from wcc.train import Stage, load_checkpoint, run_stage
    from wcc.train.checkpoint import file_sha256, save_checkpoint

    profile = get_profile(profile_name)
    if profile.data != "synthetic":
        raise ValueError(f"profile {profile_name!r} uses real data; bench pretrain makes SynthStreets checkpoints "
                         f"(for real data start from VainF's checkpoint with bench tables --init-checkpoint)")
    recipe = pretrain_recipe(profile_name, table, steps, seed)
    n = recipe.steps
    data = table_data(profile_name, table, out, None, device, progress=progress)
    path = pretrain_path(out, profile_name, table)
    # Named by the pretraining recipe's hash too: a build interrupted under another recipe (say,
    # other class weights with the same steps) must not be resumed as this one.
    digest = hashlib.sha256(json.dumps(_pretraining(_as_recorded(recipe.to_dict())), sort_keys=True).encode())
    work = path.parent / "work" / f"{profile_name}-{table}-seed{seed}-steps{n}-{digest.hexdigest()[:8]}"
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
    result = run_stage(Stage("fp32", None, None), arch=SWEEPS[table].arch, recipe=recipe, train_set=data.train,
                       train_transform=data.train_transform, evaluate=data.evaluate, workdir=work,
                       keep_fp=paper_keep_fp, device=device, progress=progress)
    state = load_checkpoint(result.checkpoint)["model"]
    if dtype == "float16":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    commit, dirty = git_state()
    meta: dict[str, Any] = {
        "what": f"SynthStreets FP32 {table} checkpoint (bench pretrain)", "profile": profile_name, "table": table,
        "arch": SWEEPS[table].arch, "recipe": recipe.to_dict(), "seed": seed, "steps": n, "dtype": dtype,
        "commit": commit, "dirty": dirty, "data": data.source,
        "metrics": record_metrics(result.metrics),
    }
    # Nothing time- or machine-dependent goes into the .pt, so the same seed, steps, commit and
    # data give the same bytes (the same sha256) on a machine with deterministic kernels.
    save_checkpoint(path, {"model_state": state, **meta})
    side = {**meta, "file": path.name, "sha256": file_sha256(path), "train_time_s": result.train_time_s,
            "eval_time_s": result.eval_time_s, "device": device,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    from bench.store import atomic_write_text

    atomic_write_text(path.with_suffix(".json"), json.dumps(side, indent=2) + "\n")
    return path


def _pretraining(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields that shape the pretrained weights: the fine-tune fields (what the later
    rows do), how often a checkpoint is written and how many loader workers feed it do not."""
    return {k: v for k, v in recipe.items() if not k.startswith("finetune_") and k not in ("checkpoint_every",
                                                                                           "num_workers")}


def _as_recorded(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe dict as a .json holds it (tuples become lists)."""
    return json.loads(json.dumps(recipe))


def _headline(metrics: dict[str, Any]) -> str:
    """The metrics a pretrain is summed up by in messages, e.g. ``miou 0.470``."""
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in ("miou", "abs_rel", "rmse") if metrics.get(k) is not None)


def _usable(path: Path, profile_name: str, table: str) -> tuple[str | None, dict[str, Any]]:
    """(why the checkpoint at ``path`` cannot start the profile's ``table``, or None when it can;
    its ``.json``). A file whose sha256 differs from its ``.json`` raises: it changed since bench
    pretrain wrote it, and guessing which of the two is right would hide that."""
    from wcc.train.checkpoint import file_sha256
    from wcc.train.recipe import Recipe

    side = path.with_suffix(".json")
    if not (path.is_file() and side.is_file()):
        return f"{path} or its .json is missing", {}
    meta = json.loads(side.read_text())
    if file_sha256(path) != meta.get("sha256"):
        raise ValueError(f"{path}: sha256 differs from the one in {side}; the file changed since bench pretrain "
                         f"wrote it. Remove both and rerun to rebuild it")
    want = _as_recorded(pretrain_recipe(profile_name, table).to_dict())
    try:  # a field added since the file was built takes its default: the behaviour the file was built with
        have = _as_recorded(Recipe.from_dict(meta.get("recipe") or {}).to_dict())
    except (TypeError, ValueError):
        have = meta.get("recipe") or {}
    if (_pretraining(have) != _pretraining(want) or meta.get("profile") != profile_name
            or meta.get("table") != table):
        theirs = {**_pretraining(have), "profile": meta.get("profile"), "table": meta.get("table")}
        ours = {**_pretraining(want), "profile": profile_name, "table": table}
        shown = "; ".join(f"{k} {theirs.get(k)!r}, not {ours.get(k)!r}"
                          for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k))
        return f"{path} was built with another recipe than profile {profile_name} asks for now: {shown}", meta
    return None, meta


def find_pretrain(profile_name: str, table: str, out: str | Path,
                  shipped: Path | None = SHIPPED_DIR) -> tuple[Path | None, dict[str, Any], list[str]]:
    """(the usable pretrain checkpoint of ``table`` or None, its ``.json``, why each other candidate
    was passed over). Candidates in order: ``<out>/pretrain/``, then ``shipped`` (the repository's
    ``results/pretrain/``)."""
    path = pretrain_path(out, profile_name, table)
    passed: list[str] = []
    for candidate in [path] + ([shipped / path.name] if shipped is not None else []):
        if not candidate.is_file():
            continue
        why, meta = _usable(candidate, profile_name, table)
        if why is None:
            return candidate, meta, passed
        passed.append(f"not using {candidate}: {why}")
    return None, {}, passed


def describe_pretrain(path: Path, meta: dict[str, Any]) -> str:
    """One line naming a pretrain checkpoint and how it was made."""
    return (f"{path} (bench pretrain, {meta['steps']} steps, seed {meta['seed']}, "
            f"commit {str(meta.get('commit'))[:8]}, {_headline(meta.get('metrics', {}))})")


def ensure_pretrain(profile_name: str, table: str, out: str | Path, device: str, progress: bool = True,
                    shipped: Path | None = SHIPPED_DIR) -> Path:
    """The profile's pretrain checkpoint of ``table``: the one in ``<out>/pretrain/``, else the
    one shipped in ``shipped`` (the repository's ``results/pretrain/``), else built once now."""
    found, meta, passed = find_pretrain(profile_name, table, out, shipped)
    for line in passed:
        _say(f"{table}: {line}")
    if found is not None:
        _say(f"{table}: FP32 starts from {describe_pretrain(found, meta)}")
        return found
    path = pretrain_path(out, profile_name, table)
    _say(f"{table}: building the SynthStreets FP32 checkpoint once ({path}); later runs reuse it")
    return build_pretrain(profile_name, table, out, device, progress=progress)


def run(args: argparse.Namespace) -> int:
    from bench._args import int_at_least, report_errors, writable_dir
    from bench.tables.cli import device_for, path_and_device_errors
    from bench.tables.profiles import get_profile
    from bench.tables.run import DataError
    from bench.tables.sweeps import SWEEPS

    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    args.data_root, args.results = None, args.out  # what path_and_device_errors reads; --out is both here
    errors: list[str | None] = [writable_dir("--out", args.out), int_at_least("--steps", args.steps, 1)]
    errors += path_and_device_errors(args)
    bad = [t for t in tables if t not in SWEEPS]
    if bad or not tables:
        errors.append(f"--tables: unknown table(s) {bad}; choose from {sorted(SWEEPS)}")
    if get_profile(args.profile).data != "synthetic":
        errors.append(f"--profile {args.profile}: uses real data; bench pretrain makes SynthStreets checkpoints")
    if report_errors("bench pretrain", errors):
        return 2
    device = device_for(args.device)
    for table in tables:
        path = pretrain_path(args.out, args.profile, table)
        if path.is_file() and not args.force:
            print(f"{table}: {path} exists (use --force to rebuild)")
            continue
        t0 = time.perf_counter()
        try:
            path = build_pretrain(args.profile, table, args.out, device, steps=args.steps, seed=args.seed,
                                  dtype=args.dtype, progress=not args.no_progress, fresh=args.force)
        except DataError as exc:
            print(f"bench pretrain: {exc}", file=sys.stderr)
            return 2
        side = json.loads(path.with_suffix(".json").read_text())
        print(f"{table}: wrote {path} (sha256 {side['sha256'][:12]}, {path.stat().st_size / 2**20:.1f} MiB); "
              f"{side['steps']} steps, seed {side['seed']}, {_headline(side['metrics'])}; "
              f"{time.perf_counter() - t0:.0f} s")
        print(f"  to ship it (bench tables then starts from it on a fresh clone): copy it and its .json to "
              f"{SHIPPED_DIR}/ and commit both")
    return 0
