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


def replace_dir(tmp_dir: Path, final_dir: Path, owned: frozenset[str] = frozenset()) -> None:
    """Swap a fully written temporary directory into place.

    The old directory is renamed aside first, so at every instant either the old or the new
    complete directory exists under a known name.
    """
    final_dir = Path(final_dir)
    old = final_dir.with_name(final_dir.name + ".old")
    recover_dir(final_dir, owned, keep=tmp_dir)
    if final_dir.exists():
        os.replace(final_dir, old)
        # Files the checkpoint does not write itself (metrics.jsonl, tensorboard/) move over to
        # the new directory, one atomic rename each, so a run's logs survive every checkpoint.
        # Names in `owned` belong to the checkpoint: an old one the new one lacks is dropped.
        for entry in old.iterdir():
            if entry.name not in owned and not (tmp_dir / entry.name).exists():
                os.replace(entry, tmp_dir / entry.name)
    os.replace(tmp_dir, final_dir)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(
    final_dir: Path, owned: frozenset[str] = frozenset(), keep: Path | None = None
) -> None:
    """Undo what a replace_dir killed part-way (SIGKILL, power cut) left behind.

    Killed between its two renames, `final_dir` is missing and `<final_dir>.old` holds the last
    complete checkpoint: put it back. Logs already moved into a temporary sibling move back too.
    Leftover temporary siblings (other than `keep`) and a stale `.old` are then removed.
    Several processes of one run may do this at once: a path another one moved is skipped.
    """
    final_dir = Path(final_dir)
    old = final_dir.with_name(final_dir.name + ".old")
    if old.is_dir() and not final_dir.exists():
        with contextlib.suppress(FileNotFoundError):
            os.replace(old, final_dir)
    if not final_dir.parent.is_dir():
        return
    for stray in final_dir.parent.glob(f".{final_dir.name}.tmp*"):
        if not stray.is_dir() or (keep is not None and stray == Path(keep)):
            continue
        with contextlib.suppress(FileNotFoundError):
            for entry in stray.iterdir() if final_dir.is_dir() else ():
                if entry.name not in owned and not (final_dir / entry.name).exists():
                    os.replace(entry, final_dir / entry.name)
        shutil.rmtree(stray, ignore_errors=True)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def fresh_tmp_dir(final_dir: Path) -> Path:
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".{final_dir.name}.tmp"))
    tmp.chmod(usual_mode(directory=True))
    return tmp


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
