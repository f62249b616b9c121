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

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

from thyroidseg._checks import PathLike

__all__ = [
    "LOCK_FILE",
    "FolderInUseError",
    "OutputExistsError",
    "check_outputs",
    "reserve_folder",
]


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
def reserve_folder(folder: PathLike, *, name: str = LOCK_FILE) -> Iterator[Path]:
    """Hold ``folder`` for this process while the block runs, so two runs cannot mix.

    Holds an exclusive lock (``flock``; ``msvcrt.locking`` on Windows) on the lock file
    ``folder/<name>`` (default `LOCK_FILE`), which names this process (host, PID, command
    line, start time, as JSON), and removes it on leaving the block (and the folder too, if
    this call created it and it is still empty). The system releases the lock when its
    process ends, however it ends, so a killed run's file is taken over by the next run,
    atomically: of several runs that find it, exactly one gets the folder. A lock that this
    process holds already is re-entered. A file that names a live process, or a process on
    another host, without being locked (a run of thyroidseg 0.1) is respected too. Runs that
    write disjoint parts of one folder (the shards of `thyroidseg.inference.shards`) each
    hold a lock ``name`` of their own.

    Raises
    ------
    FolderInUseError
        Another live process (or another host) holds the folder.
    """
    folder = Path(folder)
    if Path(name).name != name or not name.startswith("."):
        raise ValueError(f"a lock is a hidden file name such as {LOCK_FILE}, got {name!r}")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder (the output folder); choose another")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / name
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    fd = _acquire(folder, lock, me)
    if fd is None:  # ours already: the outer block releases it
        yield lock
        return
    try:
        yield lock
    finally:
        _release(lock, fd)
        if created and not any(folder.iterdir()):
            folder.rmdir()


_TRIES = 10  # times a lock file removed by its holder at the moment it was locked is reopened


def _acquire(folder: Path, lock: Path, me: Mapping[str, Any]) -> int | None:
    """Lock ``lock`` and write ``me`` into it: its open descriptor, ``None`` if ours already.

    Each try opens (or creates) the file, locks it without waiting, and checks that the
    locked file is still the one under that name (its holder may have removed it on
    leaving between the two steps). While locked, no other process can read, judge and
    replace the holder it names: that is what makes a takeover atomic.
    """
    for _ in range(_TRIES):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            holder = _lock_holder(lock)
            if holder is not None and _names(holder, me):
                return None
            raise _in_use(folder, lock, holder)
        if not _same_file(fd, lock):
            os.close(fd)
            continue
        holder = _lock_holder(lock)  # not locked: a killed run's, or a 0.1 run's
        live = holder is not None and not _names(holder, me) and not _is_dead(holder)
        if live or (holder is None and os.fstat(fd).st_size > 0):
            os.close(fd)
            raise _in_use(folder, lock, holder)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(me).encode())
        return fd
    raise FolderInUseError(f"{folder}: other runs keep taking {lock} at the same moment")


def _names(holder: Mapping[str, Any], me: Mapping[str, Any]) -> bool:
    """Whether the lock file's ``holder`` is this process."""
    return (holder["host"], holder["pid"]) == (me["host"], me["pid"])


def _try_lock(fd: int) -> bool:
    """Lock the open file without waiting; ``False`` when another process holds it."""
    try:
        if sys.platform == "win32":
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _same_file(fd: int, lock: Path) -> bool:
    """Whether the open file ``fd`` is still the file named ``lock``."""
    try:
        named = os.stat(lock)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _release(lock: Path, fd: int) -> None:
    """Remove the lock file while still holding it, then let it go.

    A process that opened the file meanwhile finds, once it holds it, that the name is gone
    (`_same_file`) and starts again. Windows cannot remove an open file: there it is closed
    first.
    """
    if sys.platform == "win32":
        os.close(fd)
        lock.unlink(missing_ok=True)
        return
    lock.unlink(missing_ok=True)
    os.close(fd)


def _in_use(folder: Path, lock: Path, holder: Mapping[str, Any] | None) -> FolderInUseError:
    """The error naming the run that holds ``folder``."""
    holder = holder or {}
    return FolderInUseError(
        f"{folder} is in use by another run (process {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, started {holder.get('started', '?')}: "
        f"{holder.get('command', '?')}); wait for it to end or choose another "
        f"folder (if no such run exists, delete {lock})"
    )


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
