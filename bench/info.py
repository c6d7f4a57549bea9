"""``python -m bench info``: what this machine is and what wcc can run on it."""

from __future__ import annotations

import argparse

from wcc.info import info_lines


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("\n".join(info_lines()))
    return 0
