"""``python -m bench info``: what this machine is and what wcc can run on it.

Prints :func:`wcc.info.info_lines` (versions, backends), then the device probes that timing
records store (:func:`bench.timing.probes.probe_all`: CPU, NVML, Jetson, CUDA device), one line
each; a probe that cannot read anything says why.
"""

from __future__ import annotations

import argparse
import json

from wcc.info import info_lines


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="device whose probes to read: cpu (default), cuda or cuda:N")


def run(args: argparse.Namespace) -> int:
    from bench.timing.probes import probe_all

    print("\n".join(info_lines()))
    print(f"device probes ({args.device}):")
    for name, value in probe_all(args.device).items():
        print(f"  {name:<11} {value if isinstance(value, str) else json.dumps(value, sort_keys=True)}")
    return 0
