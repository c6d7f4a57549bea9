"""``python -m bench``: the suite's command line.

Each subcommand lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
the modules are imported only when their command runs, so ``--help`` stays fast and a command's
heavy dependencies (pandas, submitit, ...) are needed only by that command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("bench.info", "versions, backends and the device probes of this machine"),
    "timing": ("bench.timing.cli", "layer and model timing (WCC vs dense) with device probes, into the results store"),
    "tables": ("bench.tables.cli", "rebuild the paper's Cityscapes and KITTI tables (train, evaluate, compare)"),
    "evaluate": ("bench.tables.evaluate", "evaluate one checkpoint (VainF's, or a stage's), optionally converted "
                                          "with no fine-tuning, into a results record"),
    "pretrain": ("bench.tables.pretrain", "the SynthStreets FP32 checkpoint a table's rows start from (fixed seed, "
                                          "recipe, commit and sha256 recorded)"),
    "ablation-resolution": ("bench.tables.ablation", "one tables run's 8/8 and WCC rows evaluated at several image "
                                                    "sizes: how WCC's drop depends on feature-map size"),
    "report": ("bench.report.cli", "versioned HTML reports (tables, plots, regressions) from the results store"),
    "compare": ("bench.report.compare", "improved / regressed / unchanged between two results; exit 1 on a regression"),
    "ab": ("bench.timing.ab", "time two git revisions against each other, rounds alternated A B A B; exit 1 on a "
                              "regression"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="wcc-bench: reproduce the WCC paper's tables, time WCC on this machine, build reports.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The command line as given, for commands that rerun themselves in fresh processes (timing --rounds).
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
