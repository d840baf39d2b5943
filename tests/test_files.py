"""Outputs are written atomically and durably: the data reaches the disk before the rename
makes it the file, so a power cut cannot leave an empty output that a resumed batch skips."""

import os

import numpy as np

from styleflow.io import files
from styleflow.io.images import save_image


def test_data_is_synced_before_the_rename_and_the_rename_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}") or
                       os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    target = tmp_path / "out.png"
    save_image(target, np.zeros((8, 8, 3), np.uint8))
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"]
    assert events[0][1] != str(target) and ".tmp" in str(events[0][1])  # the temporary's data
    assert events[1][1] == str(target)
    assert events[2][1] is True  # then the folder holding the rename
    assert target.stat().st_size > 0
