"""Reading what a training left, trusting none of it.

The training process writes into its own folder, and it is untrusted: what it leaves there
under a name the harness reads back (the exported program, the figures file) may be a
symbolic link to a file it could not read itself (another experiment's program, a secret under
$HOME), a hard link to one, a FIFO that blocks whoever opens it, a directory, a sparse file of
terabytes that costs it nothing, or a zip archive whose members inflate a thousandfold.

So the harness reads such a file only through `open_left`: opened without following a link
and without blocking, then judged by what was opened (``fstat`` on the descriptor, never the
name again, which could change in between): a regular file with a single link, within the
caller's size limit; the descriptor it checked is the one it reads. A zip archive's members
are read only through `read_members` (and checked through `check_archive`): its directory is
sized before it is parsed, and each member's declared size, name and compression before a byte
of it is inflated; nothing is read past what a member declared.

A training's folder is removed only through `remove_tree`: the training may have left a folder
of mode 000 in it, which stops `shutil.rmtree` for any user but root, and a training folder that
cannot be removed fails the next run made in its place and keeps its bytes on the disk.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

# No honest writer here compresses much: the exporter and torch.save store their members, and
# deflate gets real JSON or weights nowhere near this ratio, while a member of zeros (a zip
# bomb) inflates about a thousandfold. Members smaller than the floor may have any ratio.
MAX_COMPRESSION_RATIO = 100
RATIO_FLOOR_BYTES = 1 << 16
# A zip archive's directory is parsed into an object per member; this bounds that memory (a
# file of gigabytes could otherwise hold tens of millions of empty members).
MAX_ARCHIVE_MEMBERS = 100_000

_KINDS = (
    (stat.S_ISLNK, "symbolic link"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


class Refused(Exception):
    """A file the harness will not read; the message says what it is and why."""


def size_text(size: int) -> str:
    """A byte count as people read it: 512 bytes, 3.1 MB, 2.0 GB."""
    if size < 1000:
        return f"{size} bytes"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"  # pragma: no cover


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "special file")


def open_left(path: Path, max_bytes: int) -> BinaryIO:
    """Open a file a training left, for reading: never through a symbolic link, never blocking
    on a FIFO, and only a regular file with one link and at most ``max_bytes``.

    FileNotFoundError when nothing is there; Refused, saying what is there, otherwise."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise Refused(f"{path.name} is a symbolic link, not a regular file") from None
        raise Refused(f"{path.name} cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"{path.name} is a {_kind(info.st_mode)}, not a regular file")
        if info.st_nlink != 1:
            raise Refused(
                f"{path.name} has {info.st_nlink} hard links; a file the training wrote has one"
            )
        if info.st_size > max_bytes:
            raise Refused(
                f"{path.name} is {size_text(info.st_size)}, more than the "
                f"{size_text(max_bytes)} it may be"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_left(path: Path, max_bytes: int) -> bytes:
    """The bytes of a file a training left (see `open_left`), never more than ``max_bytes``."""
    with open_left(path, max_bytes) as file:
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew after it was checked
        raise Refused(f"{path.name} holds more than the {size_text(max_bytes)} it may")
    return data


def _open_archive(file: BinaryIO, what: str) -> zipfile.ZipFile:
    """The archive, once its directory is known to be small enough to parse."""
    try:
        # The end record zipfile itself will read, so the count checked is the one it parses.
        end = zipfile._EndRecData(file)  # type: ignore[attr-defined]
    except OSError as exc:
        raise Refused(f"cannot read {what}: {exc}") from None
    if not end:
        raise Refused(f"cannot read {what}: it is not a zip archive")
    members = end[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
    if members > MAX_ARCHIVE_MEMBERS:
        raise Refused(f"{what} lists {members} members; at most {MAX_ARCHIVE_MEMBERS} are read")
    try:
        return zipfile.ZipFile(file)
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile) as exc:
        raise Refused(f"cannot read {what}: {exc}") from None


def _check_members(
    archive: zipfile.ZipFile, what: str, max_total_bytes: int, limits: Mapping[str, int] | None
) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    names = Counter(info.filename for info in members)
    duplicates = sorted(name for name, count in names.items() if count > 1)
    if duplicates:
        raise Refused(f"{what} holds {duplicates[0]!r} more than once")
    if limits is not None:
        unexpected = sorted(set(names) - set(limits))
        if unexpected:
            raise Refused(
                f"{what} holds {unexpected[0]!r}; it may hold only {', '.join(sorted(limits))}"
            )
        missing = sorted(set(limits) - set(names))
        if missing:
            raise Refused(f"{what} holds no {missing[0]}")
    total = 0
    for info in members:
        size, packed = info.file_size, info.compress_size
        limit = max_total_bytes if limits is None else limits[info.filename]
        if size > limit:
            raise Refused(
                f"{what}'s member {info.filename} inflates to {size_text(size)}, more than "
                f"the {size_text(limit)} it may"
            )
        if info.compress_type == zipfile.ZIP_STORED and packed != size:
            raise Refused(
                f"{what}'s member {info.filename} is stored as {size_text(packed)} but says "
                f"it holds {size_text(size)}"
            )
        if size > RATIO_FLOOR_BYTES and size > MAX_COMPRESSION_RATIO * max(packed, 1):
            raise Refused(
                f"{what}'s member {info.filename} inflates {size // max(packed, 1)}-fold "
                f"({size_text(packed)} to {size_text(size)}), more than the "
                f"{MAX_COMPRESSION_RATIO}-fold any honest file does: a compression bomb"
            )
        total += size
    if total > max_total_bytes:
        raise Refused(
            f"{what}'s members inflate to {size_text(total)} in all, more than the "
            f"{size_text(max_total_bytes)} they may"
        )
    return members


def check_archive(data: bytes, what: str, max_total_bytes: int) -> None:
    """Check a zip archive held in memory before another reader inflates it (torch.load does):
    no duplicate member, none inflating past ``max_total_bytes`` in all or far past its size."""
    with _open_archive(io.BytesIO(data), what) as archive:
        _check_members(archive, what, max_total_bytes, None)


def read_members(
    file: BinaryIO, what: str, limits: Mapping[str, int], max_total_bytes: int
) -> dict[str, bytes]:
    """The members of a zip archive, which must be exactly those named in ``limits``, each
    within its limit, all within ``max_total_bytes``, none a compression bomb; each checked
    before it is inflated and read no further than it declared."""
    with _open_archive(file, what) as archive:
        contents: dict[str, bytes] = {}
        for info in _check_members(archive, what, max_total_bytes, limits):
            try:
                with archive.open(info) as member:
                    data = member.read(info.file_size + 1)
            except (
                OSError,
                ValueError,
                EOFError,
                RuntimeError,
                zipfile.BadZipFile,
                zlib.error,
            ) as exc:
                raise Refused(f"{what}'s member {info.filename} cannot be read: {exc}") from None
            if len(data) != info.file_size:
                raise Refused(
                    f"{what}'s member {info.filename} holds {size_text(len(data))}, not the "
                    f"{size_text(info.file_size)} it declared"
                )
            contents[info.filename] = data
        return contents


def remove_tree(path: Path) -> None:
    """Remove a folder a training wrote in, whatever it left there: folders of mode 000 (each
    folder, never what a link points to, is made the owner's to list and empty first) and a
    chain of folders thousands deep (walked one open folder at a time, by descriptor and not by
    path, and without recursion: `shutil.rmtree` raises RecursionError there, and a path past
    PATH_MAX cannot be named). The training has ended, so nothing changes the tree meanwhile;
    what still cannot be removed (a file another user owns) is left, as
    `shutil.rmtree(ignore_errors=True)` would."""
    if path.is_symlink() or not path.is_dir():
        return
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    # Per folder open on the way down: its name in its parent, and its folders still to remove.
    stack = [("", _empty_of_files(fd))]
    try:
        while stack:
            name, pending = stack[-1]
            if pending:
                folder = pending.pop()
                with contextlib.suppress(OSError):
                    os.chmod(folder, 0o700, dir_fd=fd)  # a folder, not a link, when listed
                try:
                    child = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError:
                    continue  # left, with what is in it
                os.close(fd)
                fd = child
                stack.append((folder, _empty_of_files(fd)))
                continue
            stack.pop()
            if stack:
                parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = parent
                with contextlib.suppress(OSError):
                    os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _empty_of_files(fd: int) -> list[str]:
    """Unlink everything but folders in the folder open at ``fd``; return its folders' names."""
    folders = []
    with contextlib.suppress(OSError), os.scandir(fd) as entries:
        for entry in entries:
            try:
                is_folder = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_folder = False
            if is_folder:
                folders.append(entry.name)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.name, dir_fd=fd)
    return folders
