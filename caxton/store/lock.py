"""An exclusive lock on the data folder, so two servers never run the same agents and store."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE_NAME = "caxton.lock"


class DataDirInUse(RuntimeError):
    """Another process has locked the data folder; the message names that process and what to do."""


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[Path]:
    """Hold an exclusive `flock` on `data_dir/caxton.lock` for the duration of the block.

    The kernel drops the lock when the process ends, however it ends, so a crash never
    leaves the folder locked. Raises DataDirInUse when another process holds it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise DataDirInUse(
                f"data folder {data_dir} is in use by another Caxton process (pid {holder}); "
                "stop it or start with another --data-dir"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(descriptor)
