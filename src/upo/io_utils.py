"""Atomic writes, JSONL metric logs and file digests: nothing already written is lost when a run is
killed, and a resumed run can tell whether its inputs changed."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; output_lock then guards nothing
    fcntl = None

from .errors import UpoError


def usual_mode(directory: bool = False) -> int:
    """The mode open() or mkdir() would give under the current umask. mkstemp and mkdtemp make
    private temporaries (0600, 0700); the data files and checkpoints they become get this."""
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


# What an existing output path may be besides a regular file, and how to call it in the refusal.
NOT_A_FILE = (
    (stat.S_ISDIR, "is a directory, expected a file name to write"),
    (stat.S_ISFIFO, "is a named pipe (FIFO), expected a regular file to write"),
    (stat.S_ISCHR, "is a device, expected a regular file to write"),
    (stat.S_ISBLK, "is a device, expected a regular file to write"),
    (stat.S_ISSOCK, "is a socket, expected a regular file to write"),
)


def check_file_target(path: str | Path | None) -> None:
    """Refuse, before any work is done, an output file name that names anything but a regular
    file (or nothing yet).

    The write renames a new file over the path, so a directory, FIFO, device (/dev/null, which
    root would replace) or socket there would be destroyed or would swallow the results. The
    type is that of what the path leads to: `--json /dev/stdout` is refused as the pipe or
    terminal it is. A symlink to a regular file is accepted, and the rename then replaces the
    link itself, not the file it points to: writing through it would change a file elsewhere
    that other links or runs may share, while the user named this path.
    """
    if path is None:
        return
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # nothing there yet (or a dangling link, which the rename replaces)
    except OSError as err:  # a parent is a file, or cannot be searched
        raise UpoError(f"{path}: cannot write ({err.strerror or err})") from None
    for is_kind, refusal in NOT_A_FILE:
        if is_kind(mode):
            raise UpoError(f"{path}: {refusal}")


def check_dir_target(path: str | Path | None, flag: str) -> None:
    """Refuse, before any work is done, an output directory that is an existing file."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise UpoError(f"{flag} {path}: is a file, expected a directory")


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (the data file and policy weights a result depends on)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync, then rename: a reader sees the old
    file or the new one, never a truncated one. A failure (disk full, quota, permissions) is an
    UpoError naming `path`; the temporary is removed and the old file left as it was."""
    path = Path(path)
    check_file_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UpoError(f"{path}: cannot write ({err.strerror or err})") from None
    try:
        try:
            os.fchmod(fd, usual_mode())
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise UpoError(f"{path}: cannot write ({err.strerror or err})") from None
        raise


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is out: one call may write only part of a large buffer."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def output_lock(target: str | Path | None) -> Iterator[None]:
    """Hold `<target>.lock` while a run writes `target` and its companions (`<target>.partial/`),
    so that a second upo process aiming at the same file is refused instead of mixing its work
    into the first one's. An flock, not the file's existence, is the lock: the kernel drops it
    when its process dies, so a killed run never blocks the next one. None holds nothing."""
    if target is None or fcntl is None:
        yield
        return
    lock = Path(f"{target}.lock")
    fd = _take_lock(lock, target)
    if fd is None:
        yield
        return
    try:
        yield
    finally:
        # Removed while still held, so that no later run ever locks this inode: one that opened
        # it just before sees it is no longer the file at `lock` and takes a new one.
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


# flock errors that mean the file system keeps no locks (some network mounts), not a holder.
NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


def _take_lock(lock: Path, target: str | Path) -> int | None:
    """The descriptor holding `lock`; None where the file system cannot lock at all, so that
    such a mount still runs (unguarded, as before locks existed) rather than refusing."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, usual_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _lock_holder(fd)
                os.close(fd)
                if err.errno in NO_LOCKS:
                    lock.unlink(missing_ok=True)
                    return None
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise UpoError(
                    f"{target}: another upo process{holder} is writing it now (it holds {lock}); "
                    f"wait for it to finish or write elsewhere"
                ) from None
            if _is_file_at(fd, lock):
                # The pid only makes the refusal above more helpful: a full disk here is no
                # reason to stop a run that already holds its lock.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    write_all(fd, f"{os.getpid()}\n".encode())
                return fd
            os.close(fd)  # the lock we got was removed by a run that just ended: take the new one
    except OSError as err:
        raise UpoError(f"{lock}: cannot lock ({err.strerror or err})") from None


def _is_file_at(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (here.st_dev, here.st_ino)


def _lock_holder(fd: int) -> str:
    """' (pid N)' for the refusal when the holder wrote its pid, '' otherwise."""
    with contextlib.suppress(OSError, ValueError):
        return f" (pid {int(os.pread(fd, 32, 0))})"
    return ""


def write_json(path: str | Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, missing: str | None = None) -> dict:
    """A JSON object from a file, every failure one UpoError line; `missing` is the message
    when the file is absent (default: "PATH: file not found")."""
    path = Path(path)
    if not path.is_file():
        raise UpoError(missing or f"{path}: file not found")
    try:
        # bytes, decoded as UTF-8 whatever the locale: the same file reads the same everywhere
        data = json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as err:
        raise UpoError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError as err:
        raise UpoError(
            f"{path}: not a text file (not UTF-8: {err.reason} at byte {err.start})"
        ) from None
    except RecursionError:
        raise UpoError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise UpoError(f"{path}: not valid JSON ({str(err).splitlines()[0]})") from None
    except OSError as err:
        raise UpoError(f"{path}: cannot read ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise UpoError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# What a checkpoint directory write puts last into its complete temporary directory, listing the
# files to move in. From then on the new checkpoint is on disk in full: a run killed while moving
# it into place has the next one finish the move (recover_dir) instead of throwing it away.
SEALED = ".sealed.json"


def real_dir(path: str | Path) -> Path:
    """`path`, or the directory it leads to when it is a symlink. upo writes into a linked run
    directory: its temporaries go beside the real one (a rename cannot cross file systems) and
    the user's link is left as it is, pointing at the updated directory."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextlib.contextmanager
def atomic_dir(final_dir: str | Path, owned: frozenset[str] | None = None) -> Iterator[Path]:
    """A fresh temporary directory beside `final_dir` to write a checkpoint's files into (plain
    files); leaving the block makes them the checkpoint at `final_dir`. Every checkpoint
    directory upo writes goes through here.

    `final_dir` stays a real directory that is never renamed nor missing (users pass it around,
    and its logs live in it): its files are replaced one by one with os.replace, each atomic,
    config.json last. So a reader finds every file whole, the old or the new version, and finds
    a checkpoint's config.json only once the other files are there. The config.json of every
    checkpoint of one run describes the same model, so the weights a reader loads always fit it.

    The temporary is sealed (SEALED) once its files are fsynced and before the first one moves:
    a kill before the seal leaves the old checkpoint untouched, a kill after it leaves a complete
    new checkpoint that recover_dir finishes moving in. Names in `owned` (None: every name) that
    the old checkpoint has and the new one lacks are removed after the moves; anything else in
    `final_dir` (metrics.jsonl, tensorboard/) stays where it is.
    """
    final_dir = real_dir(final_dir)
    recover_dir(final_dir)  # an earlier write's leftovers go first: they are older than this one
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".{final_dir.name}.tmp"))
    try:
        yield tmp
        _move_in(tmp, final_dir, _seal(tmp, final_dir, owned))
    except BaseException:
        # Ctrl-C or a full disk: an unsealed temporary is dropped, a sealed one moved in.
        with contextlib.suppress(OSError):
            recover_dir(final_dir)
        raise


def _seal(tmp: Path, final_dir: Path, owned: frozenset[str] | None) -> dict:
    names = sorted(entry.name for entry in tmp.iterdir())
    names.sort(key=lambda name: name == "config.json")  # last: readers recognise a checkpoint by it
    mode = usual_mode()
    for name in names:
        os.chmod(tmp / name, mode)  # safetensors and mkstemp write private files (0600)
        _fsync(tmp / name)
    old = sorted(entry.name for entry in final_dir.iterdir()) if final_dir.is_dir() else []
    stale = [name for name in old if (owned is None or name in owned) and name not in names]
    plan = {"files": names, "stale": stale}
    atomic_write_text(tmp / SEALED, json.dumps(plan) + "\n")
    _fsync(tmp, directory=True)
    return plan


def _move_in(tmp: Path, final_dir: Path, plan: dict) -> None:
    """Move a sealed checkpoint's files into `final_dir`. Repeating it after a kill, or several
    processes of one run doing it at once, is harmless: a file already moved is skipped."""
    final_dir.mkdir(exist_ok=True)
    for name in plan["files"]:
        with contextlib.suppress(FileNotFoundError):
            os.replace(tmp / name, final_dir / name)
    for name in plan["stale"]:
        stale = final_dir / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    _fsync(final_dir, directory=True)
    shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not directory:  # some file systems cannot fsync a directory; a file must reach disk
            raise
    finally:
        os.close(fd)


def recover_dir(final_dir: str | Path) -> None:
    """Finish what a checkpoint write killed part-way (SIGKILL, power cut) left beside
    `final_dir`: a sealed temporary is moved in, so the complete new checkpoint is kept; an
    unsealed one is removed (the old checkpoint was not touched yet). Every run does this before
    it reads or writes its directory."""
    final_dir = real_dir(final_dir)
    if not final_dir.parent.is_dir():
        return
    for stray in final_dir.parent.glob(f".{final_dir.name}.tmp*"):
        if not stray.is_dir():
            continue
        plan = _sealed_plan(stray)
        if plan is None:
            shutil.rmtree(stray, ignore_errors=True)
        else:
            _move_in(stray, final_dir, plan)


def _sealed_plan(tmp: Path) -> dict | None:
    """The moves a sealed temporary lists; None when it is not sealed (or the list is not one
    upo wrote: names must stay inside the directories)."""
    try:
        plan = json.loads((tmp / SEALED).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    lists = [plan.get(key) for key in ("files", "stale")] if isinstance(plan, dict) else [None]
    for names in lists:
        if not isinstance(names, list) or not all(_plain_name(n) for n in names):
            return None
    return plan


def _plain_name(name) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\0" not in name
    )


class JsonlLog:
    """Append-only metrics log; each line is flushed so a killed run keeps what it logged."""

    def __init__(self, path: str | Path, truncate_after_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is not None and self.path.exists():
            # On resume, drop lines logged after the checkpoint we resume from, and a last line
            # a killed run left half-written.
            kept = [
                line
                for line in self.path.read_text(errors="replace").splitlines()
                if _step_of(line) is not None and _step_of(line) <= truncate_after_step
            ]
            atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def write(self, record: dict) -> None:
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            # A full disk fails the flush at close, an OSError without a file name: name the
            # log, so that the one error line says which file could not be written.
            raise UpoError(f"{self.path}: cannot write ({os_reason(err)})") from None


def _step_of(line: str) -> int | None:
    """The step of one metrics line; None for a blank, torn or foreign line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record.get("step", 0) if isinstance(record, dict) else None


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def os_reason(err: Exception) -> str:
    """The operating system's words in an OSError, or in the SafetensorError safetensors raises
    for one ("I/O error: No space left on device (os error 28) at path ...")."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    found = re.search(r"I/O error: (.*?) \(os error \d+\)", str(err))
    return found.group(1) if found else str(err).splitlines()[0]
