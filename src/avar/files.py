"""Files avar writes: whole or not at all, with the permissions any new file gets, and names
made safe from data. The one place for atomic writes; every package imports them from here.

- :func:`write_atomic` / :func:`write_json_atomic`: bytes or JSON through a temporary sibling,
  synced, then renamed over the target.
- :func:`atomic_path`: a temporary sibling path for writers that want a path (encoders,
  matplotlib, exporters), renamed over the target when the block ends without an error and
  removed otherwise.
- :func:`write_synced` and :func:`replace_dir`: a folder written whole (a run directory):
  each file written and synced inside a staging folder, which then replaces the target.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


NEW_FILE_MODE = 0o666
"""What a new file asks for; the umask takes away the rest, as for any file a program writes."""


def _umask() -> int:
    try:  # Linux says it without changing it (os.umask would, briefly, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    The file gets the permissions any new file gets (``0666`` less the umask), not the
    private ``0600`` of a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, NEW_FILE_MODE & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            _sync(handle, data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (a new file in a staging folder) and sync it to disk."""
    with open(path, "wb") as handle:
        _sync(handle, data)


def _sync(handle, data: bytes) -> None:
    handle.write(data)
    handle.flush()
    os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` (hidden, ending in ``suffix``, e.g. ``.png`` for a
    writer that picks its format by extension) to write to; renamed over ``path`` when the
    block ends without an error, removed whatever happens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial{suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def safe_file_name(text: str, limit: int = 64) -> str:
    """``text`` (from data: a URL, a file name, a label) as one plain file-name part: runs of
    anything but letters, digits, ``.``, ``-`` and ``_`` become ``_``, no leading or trailing
    ``.``/``_`` (so no hidden files, no ``..``), at most ``limit`` characters (a file name holds
    255 bytes), never empty. Callers add a digest where distinct texts must stay distinct."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:limit]
    return safe or "_"


def write_json_atomic(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


def replace_dir(stage: Path, root: Path) -> None:
    """Rename ``stage`` to ``root``; an existing ``root`` is moved aside first and deleted
    only once the new directory is in place."""
    if not root.exists():
        os.rename(stage, root)
        return
    old = root.parent / f".{root.name}.{secrets.token_hex(4)}.old"
    os.rename(root, old)
    try:
        os.rename(stage, root)
    except BaseException:
        os.rename(old, root)
        raise
    shutil.rmtree(old, ignore_errors=True)
