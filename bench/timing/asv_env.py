"""asv plugin: the ``shared-virtualenv`` environment type (loaded by ``asv.conf.json``).

asv builds one environment per configuration and reinstalls only the project per commit. A
plain virtualenv would also need torch installed into it, from an index that may only offer a
wheel for another accelerator. ``shared-virtualenv`` is asv's virtualenv with one addition: a
``.pth`` file that appends the site-packages of the Python running asv, so torch (CPU, CUDA,
ROCm or Jetson build) and the other dependencies come from there, installed once, never per
commit. The environment's own site-packages come first, so the commit under test (installed
with ``pip install --no-deps``) always shadows any other copy of ``wcc``.

Run asv with the interpreter that has torch (``.venv/bin/asv ...`` or ``python -m asv ...``).
"""

from __future__ import annotations

import importlib.util
import site
import sys
import sysconfig
from pathlib import Path

from asv import util
from asv.console import log
from asv.plugins.virtualenv import Virtualenv

PTH_NAME = "_wcc_shared_site.pth"


def host_site_dirs() -> list[str]:
    """site-packages folders of the Python running asv, in import order, existing only."""
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    out: list[str] = []
    for d in dirs:
        if d not in out and Path(d).is_dir():
            out.append(d)
    return out


class SharedVirtualenv(Virtualenv):
    """A virtualenv that reuses the running interpreter's installed packages (see module doc)."""

    tool_name = "shared-virtualenv"

    def _install_requirements(self) -> None:
        # Link before asv installs its own requirements, so pip sees them already satisfied.
        self._link_host_site()
        super()._install_requirements()

    def _link_host_site(self) -> None:
        if importlib.util.find_spec("torch") is None:
            raise util.UserError(
                f"shared-virtualenv reuses the packages of the Python running asv ({sys.executable}), "
                "and torch is not importable there; run asv from the environment that has torch, "
                "e.g. `.venv/bin/asv` or `python -m asv`")
        probe = "import sys, sysconfig; print(sysconfig.get_paths()['purelib']); print(sys.version_info[:2])"
        target, version = self.run(["-c", probe]).strip().splitlines()
        if version != str(sys.version_info[:2]):
            raise util.UserError(
                f"shared-virtualenv: the environment's Python {version} differs from the one running asv "
                f"{sys.version_info[:2]}; set \"pythons\" in asv.conf.json to {sys.version_info.major}."
                f"{sys.version_info.minor}")
        dirs = host_site_dirs()
        Path(target, PTH_NAME).write_text("".join(d + "\n" for d in dirs))
        log.info(f"shared-virtualenv: reusing packages from {', '.join(dirs)}")
