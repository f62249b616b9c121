"""Output files and folders that no run destroys: `check_outputs` and `reserve_folder`.

Every command that writes goes through these two rules: outputs are checked before
anything is written (never an input, never one path for two outputs, existing files only
replaced on request) and an output folder is held by one run at a time (a lock file naming
its process).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]
"""A path as the library takes it: a string or any ``os.PathLike`` (``pathlib.Path``)."""


class OutputExistsError(FileExistsError):
    """Output files exist already and replacing them was not allowed.

    ``paths`` lists them; the message names the first five and says how to replace them.
    """

    def __init__(self, paths: Sequence[PathLike]) -> None:
        self.paths = [Path(p) for p in paths]
        shown = ", ".join(map(str, self.paths[:5])) + (" ..." if len(self.paths) > 5 else "")
        super().__init__(
            f"{len(self.paths)} output file(s) exist already ({shown}); "
            "pass overwrite=True (--overwrite) to replace them"
        )


def check_outputs(
    outputs: Iterable[PathLike | None],
    *,
    inputs: Iterable[PathLike] = (),
    overwrite: bool = False,
) -> None:
    """Refuse outputs that would destroy a file, before anything is written.

    The rules every command follows, checked in this order:

    1. an output is never one of the ``inputs`` (files), even with ``overwrite``:
       ``ValueError``;
    2. no path is given for two outputs: ``ValueError``;
    3. an output that exists is replaced only with ``overwrite``: `OutputExistsError`
       listing them all; an existing folder is never replaced by a file (``ValueError``).

    Paths are compared after resolving links, so ``a/../b.png`` and a symbolic link to an
    input count as that input. ``None`` entries (outputs not asked for) are ignored.

    Raises
    ------
    ValueError, OutputExistsError
        As above; the message names the paths.
    """
    wanted = [Path(p) for p in outputs if p is not None]
    protected = {Path(p).resolve() for p in inputs}
    seen: dict[Path, Path] = {}
    for path in wanted:
        real = path.resolve()
        if real in protected:
            raise ValueError(f"{path} is one of this command's inputs: it is never written over")
        if real in seen:
            raise ValueError(f"{path} is given for two outputs ({seen[real]} and {path})")
        seen[real] = path
        if path.is_dir():
            raise ValueError(f"{path} is a folder: give a file name for this output")
    existing = [path for path in wanted if path.exists()]
    if existing and not overwrite:
        raise OutputExistsError(existing)


LOCK_FILE = ".thyroidseg.lock"
"""The file that reserves an output folder for one run (`reserve_folder`)."""


class FolderInUseError(RuntimeError):
    """Another running process holds the output folder (its lock file names it)."""


@contextlib.contextmanager
def reserve_folder(folder: PathLike) -> Iterator[Path]:
    """Hold ``folder`` for this process while the block runs, so two runs cannot mix.

    Creates ``folder/.thyroidseg.lock`` exclusively (``O_CREAT | O_EXCL``), holding this
    process's host, PID, command line and start time as JSON, and removes it on leaving the
    block (and the folder too, if this call created it and it is still empty). A lock that
    this process holds already is re-entered. A lock whose holder is a PID of this host
    that no longer runs (a killed run) is taken over; any other lock raises
    `FolderInUseError` naming its holder.

    Raises
    ------
    FolderInUseError
        Another live process (or another host) holds the folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder (the output folder); choose another")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None and (holder["host"], holder["pid"]) == (me["host"], me["pid"]):
                yield lock  # ours already: an outer block releases it
                return
            if holder is None or not _is_dead(holder):
                holder = holder or {}
                raise FolderInUseError(
                    f"{folder} is in use by another run (process {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')}, started {holder.get('started', '?')}: "
                    f"{holder.get('command', '?')}); wait for it to end or choose another "
                    f"folder (if no such run exists, delete {lock})"
                ) from None
            lock.unlink(missing_ok=True)  # left by a killed run: take it over
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        break
    else:
        raise FolderInUseError(f"{folder}: another run took {lock} at the same moment")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()


def _lock_holder(lock: Path) -> dict[str, Any] | None:
    """The holder a lock file names; ``None`` when it cannot be read (half-written)."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(holder, dict) and {"host", "pid"} <= holder.keys()
    return holder if ok else None


def _is_dead(holder: Mapping[str, Any]) -> bool:
    """Whether the holder's process is known to be gone (same host, no such PID)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
