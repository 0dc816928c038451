"""A real full disk: a small tmpfs mounted for one test (root only, as in CI), resizable."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free


@pytest.fixture
def small_disk(tmp_path, request):
    """A small tmpfs (2 MiB, or the size a `disk_size` marker gives); `resize('64m')` is 'the
    admin freed space'."""
    marker = request.node.get_closest_marker("disk_size")
    size = marker.args[0] if marker else "2m"
    path = tmp_path / "small"
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
