"""Every file and folder witune writes goes through here: written under a temporary name, then renamed.

    atomic_write_text(path, text)            # whole text at once
    with atomic_open(path, "w") as f: ...    # streamed; the old file stays until the block ends without error
    with atomic_dir(path) as tmp: ...        # a folder (model/): filled in `tmp`, swapped in on success
    check_output(path, inputs=[src], force)  # before any work: -o not an input nor inside one, exists only forced

Why: a kill, a full disk or an exception half-way through a write must leave the previous file or folder exactly
as it was, never a truncated or mixed one. A rename inside one folder is atomic on POSIX file systems, so
readers see either the old or the new content. The temporary names are hidden (`.NAME.PID.RANDOM.tmp`) and
carry the writer's process id: a later write to the same path removes the litter of writers that died (SIGKILL
gives no chance to clean up), and never a temporary that a live process is still writing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from witune.errors import ConfigError

# The permissions a plainly created file gets (mkstemp would leave 0600). Read once: os.umask can only be read by
# setting it, which is not thread-safe later on.
_UMASK = os.umask(0)
os.umask(_UMASK)
# Write errors that mean "this output cannot be written" rather than a bug: reported as one line naming the path.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


class OutputError(ConfigError):
    """An output that must not or cannot be written (same as an input, exists without --force, disk full)."""


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale(path: str | Path) -> list[Path]:
    """Remove temporaries of `path` left by writers that no longer run (killed mid-write); returns them."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for p in path.parent.glob(f".{glob_escape(path.name)}.*"):
        parts = p.name[len(path.name) + 2 :].split(".")
        if len(parts) < 3 or parts[-1] not in ("tmp", "old") or not parts[0].isdigit():
            continue
        pid = int(parts[0])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename durable (a power cut right after it must not bring the old name back)."""
    _fsync_path(folder)


def _fsync_path(path: str | Path) -> None:
    """fsync a file or folder; best effort: a file system that cannot (or a vanished file) is not an error."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _error(path: Path, e: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {e.strerror or e}")


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; on a normal exit flush, fsync and rename it to `path`. On an
    exception (or a kill) `path` keeps its old content and the temporary is removed (a kill's by the next write)."""
    if mode not in ("w", "wb", "wt", "x", "xb"):
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not supported")
    path = Path(path)
    binary = "b" in mode
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    except OSError as e:
        raise _error(path, e) from None
    tmp_path = Path(tmp)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        f: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding=encoding, newline=newline)
    except BaseException:
        os.close(fd)
        tmp_path.unlink(missing_ok=True)
        raise
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if "x" in mode and path.exists():
            raise OutputError(f"cannot write {path}: it already exists")
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        if e.errno in _WRITE_ERRNOS:
            raise _error(path, e) from None
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


# Linux renameat2(RENAME_EXCHANGE) swaps two names in one step: with it, replacing a folder has no moment at
# which `path` is missing. Elsewhere (or on file systems without it) two renames are used, see atomic_dir.
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; when the block ends normally it becomes `path`.

    A new folder is renamed into place. An existing one is swapped with the new in one step (renameat2
    RENAME_EXCHANGE) where the system has it; otherwise the old folder is renamed aside first, then the new one
    in. Either way `path` is at every moment the complete old or the complete new folder (in the fallback,
    briefly absent), never a mix; the old one is removed last. On an exception the temporary is removed and
    `path` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_UMASK)
    except OSError as e:
        raise _error(path, e) from None
    try:
        yield tmp
        finish_tree(tmp)
        if path.is_dir() and not path.is_symlink():
            if _exchange(tmp, path):
                old = tmp  # now holds the previous folder
            else:
                old = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".old"))
                os.rmdir(old)
                os.rename(path, old)
                os.rename(tmp, path)
            fsync_dir(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if path.exists() or path.is_symlink():
                path.unlink()  # a file (or link) where the folder goes: replaced as a whole
            os.rename(tmp, path)
            fsync_dir(path.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in _WRITE_ERRNOS:
            raise _error(path, e) from None
        raise
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if type(e).__name__ == "SafetensorError" and "I/O error" in str(e):
            # safetensors writes from Rust and reports a full disk as its own error type, not as OSError.
            raise OutputError(f"cannot write {path}: {str(e).split('I/O error: ', 1)[-1]}") from None
        raise


def finish_tree(folder: Path) -> None:
    """Before a finished folder is renamed into place: give every file the permissions a plainly created file
    gets (safetensors writes through a temporary file and leaves 0600, other writers follow the umask), and
    fsync it (else a power cut could leave the new name pointing at empty files)."""
    for root, _, files in os.walk(folder):
        for name in files:
            file = os.path.join(root, name)
            if not os.path.islink(file):
                os.chmod(file, 0o666 & ~_UMASK)
            _fsync_path(file)
        fsync_dir(Path(root))


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(out: Path, folder: Path) -> bool:
    """Whether `out` is `folder` or lies anywhere under it (links resolved)."""
    try:
        return folder.is_dir() and out.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _unwritable(out: Path) -> str | None:
    """Why `out` could not be created, known before any work: the nearest existing folder above it is a file,
    or may not be written (permissions, a read-only mount; `os.access` says so even for root)."""
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the folder {parent} is not writable"
    return None


def check_output(
    path: str | Path,
    inputs: Iterable[str | Path | None] = (),
    force: bool = False,
    what: str = "output",
    folder: bool = False,
) -> Path:
    """The one check every output passes before any work starts. Refused, in one line naming the path, whatever
    `force` says: an output that is one of the inputs (same resolved path or same inode, e.g. a hard link) or
    lies inside an input folder (a model folder, a dataset folder, a sweep folder: `eval MODEL --json
    MODEL/config.json` once replaced the model's config), or that cannot be written (under a file, a read-only
    folder). Refused without `force`: an output that exists. `folder`: the output is a folder (figures), else a
    file, and an existing folder in its place is refused."""
    out = Path(path)
    for src in inputs:
        if src is None:
            continue
        if _inside(out, Path(src)):
            raise OutputError(f"{out}: the {what} lies inside the input folder {src}; write outside it")
        if _same_file(out, Path(src)):
            raise OutputError(f"{out}: the {what} is the input file {src}; write to another file")
    if out.is_dir() and not folder:
        raise OutputError(f"{out}: the {what} is a folder; give a file name")
    if out.exists() and folder and not out.is_dir():
        raise OutputError(f"{out}: the {what} is a file; give a folder")
    if (out.exists() or out.is_symlink()) and not force and not folder:
        raise OutputError(f"{out}: the {what} exists already; pass --force to replace it")
    why = _unwritable(out / "x" if folder and out.is_dir() else out)
    if why is not None:
        raise OutputError(f"cannot write {out}: {why}")
    return out


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """`fig.savefig` through a temporary file (the format from the file name's suffix, PNG without one)."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".").lower() or "png")
    with atomic_open(path, "wb") as f:
        fig.savefig(f, **kwargs)
    return path
