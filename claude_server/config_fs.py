"""The configuration directory's folders and files, reached without ever following a symlink.

A turn's Bash tool runs as the server's user and can plant anything in the directory: a
skill folder that is a symlink to ``/``, an agent file that is a symlink or a hard link to a
file elsewhere, a FIFO that would block a reader forever. So, below the root:

- Every folder is opened relative to the one above it, with ``O_NOFOLLOW | O_DIRECTORY``,
  and every file relative to its folder's descriptor. Nothing is ever resolved by path, so
  no symlink can be swapped in between a check and a use (the workspace files API checks
  the resolved path, then the descriptor; here there is no resolved path to check).
- A symlink anywhere on the way is refused: 403 ``outside_config_dir``.
- Only regular files with a single link are read or replaced: a FIFO, a device or a folder
  where a file should be is refused, and so is a hard link, which may be a file outside
  under a second name. Files are opened with ``O_NONBLOCK`` (a FIFO opens at once instead of
  waiting for a writer) and checked with ``fstat`` before a byte is read.
- A write goes to a new temporary file in the folder (``O_EXCL | O_NOFOLLOW``, mode 0600),
  which is then renamed over the old name: ``rename`` replaces a name and never writes
  through it, so even a link swapped in at the last moment is replaced, not followed.

The root itself is the operator's choice and may be a symlink: ``ConfigFiles`` resolves it
once, and a symlink later found at the resolved path is refused like any other.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import uuid
from collections.abc import Sequence
from pathlib import Path

from claude_server.errors import Conflict, Forbidden

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# The files may hold secrets (an MCP server's env, settings' env), and only the server's
# user, who runs the CLI, reads them.
FILE_MODE = 0o600


class OutsideConfigDir(Forbidden):
    code = "outside_config_dir"


class NotAFolder(Conflict):
    code = "not_a_directory"


def describe_mode(mode: int) -> str:
    """What a file of ``mode`` is, for messages: "a FIFO", "a socket", ..."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def refuse_unless_plain(st: os.stat_result, path: str) -> None:
    """403 unless ``st`` (an lstat or fstat) is a regular file with a single link."""
    if stat.S_ISLNK(st.st_mode):
        raise OutsideConfigDir(f"{path} is a symbolic link: the configuration API follows none")
    if not stat.S_ISREG(st.st_mode):
        raise OutsideConfigDir(f"{path} is {describe_mode(st.st_mode)}, not a regular file")
    if st.st_nlink > 1:
        raise OutsideConfigDir(
            f"{path} has {st.st_nlink} links: it may be a file outside the configuration directory "
            "under a second name, so the configuration API leaves it alone"
        )


class Folder:
    """An open folder of the configuration directory; every name in it is reached through its
    descriptor. A context manager: leaving it closes the descriptor."""

    def __init__(self, fd: int, rel: str) -> None:
        self.fd = fd
        self.rel = rel  # relative to the root, for messages; "" for the root

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def path_of(self, name: str) -> str:
        return f"{self.rel}/{name}" if self.rel else name

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry itself (a symlink is not followed); None when there is none."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _refuse_link(self, name: str) -> None:
        st = self.lstat(name)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise OutsideConfigDir(f"{self.path_of(name)} is a symbolic link: the configuration API follows none")

    def _open_folder(self, name: str, *, create: bool) -> Folder:
        try:
            return Folder(os.open(name, DIR_FLAGS, dir_fd=self.fd), self.path_of(name))
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
        # Linux answers O_NOFOLLOW | O_DIRECTORY on a symlink with ENOTDIR, as for a file: look.
        self._refuse_link(name)
        if create:
            raise NotAFolder(f"{self.path_of(name)} is a file, not a folder")
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", self.path_of(name))

    def folder(self, name: str, *, create: bool = False) -> Folder:
        """The subfolder ``name``: FileNotFoundError when absent (unless ``create``),
        NotADirectoryError when a file (``NotAFolder`` when creating), 403 for a symlink."""
        try:
            return self._open_folder(name, create=create)
        except FileNotFoundError:
            if not create:
                raise
        # What another writer creates meanwhile is opened and checked like the rest.
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, dir_fd=self.fd)
        return self._open_folder(name, create=create)

    def descend(self, parts: Sequence[str], *, create: bool = False) -> Folder:
        """The folder ``parts`` below this one, each part opened from the one before it (the
        descriptors on the way are closed). A new descriptor even for no parts."""
        current = Folder(os.dup(self.fd), self.rel)
        for part in parts:
            with current as parent:
                current = parent.folder(part, create=create)
        return current

    def _check_file(self, st: os.stat_result, name: str) -> None:
        if stat.S_ISDIR(st.st_mode):  # as absent as a file that is not there
            raise IsADirectoryError(errno.EISDIR, "Is a directory", self.path_of(name))
        refuse_unless_plain(st, self.path_of(name))

    def read(self, name: str) -> tuple[bytes, os.stat_result]:
        """A plain file's content and status; FileNotFoundError when absent, IsADirectoryError
        for a folder, else 403 for anything that is not a regular file with one link."""
        st = self.lstat(name)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, "No such file", self.path_of(name))
        # Checked before the open too, so that a FIFO or a device is not even opened.
        self._check_file(st, name)
        try:
            fd = os.open(name, READ_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            # Swapped since the lstat: ELOOP for a symlink, ENXIO or EOPNOTSUPP for a socket.
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EOPNOTSUPP):
                raise OutsideConfigDir(f"{self.path_of(name)} was replaced while being read") from None
            raise
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fd)  # what was opened is what counts
            self._check_file(st, name)
            return fh.read(), st

    def plain(self, name: str) -> os.stat_result | None:
        """The status of a regular file with one link, None when absent, else 403."""
        st = self.lstat(name)
        if st is not None:
            refuse_unless_plain(st, self.path_of(name))
        return st

    def names(self) -> list[str]:
        return os.listdir(self.fd)

    def scan(self) -> list[os.DirEntry[str]]:
        """The entries, with their types as the folder has them (a symlink is a symlink)."""
        with os.scandir(self.fd) as entries:
            return list(entries)

    def write(self, name: str, data: bytes) -> None:
        """Write to a temporary file in this folder, then rename it over ``name``: a reader
        (the CLI starting a turn) sees the old file or the new one, never half of one."""
        tmp = f".{name}.{uuid.uuid4().hex[:12]}.tmp"
        fd = os.open(tmp, TEMP_FLAGS, FILE_MODE, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            except IsADirectoryError:
                raise Conflict(f"{self.path_of(name)} is a folder", code="is_a_directory") from None
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self.fd)
            raise

    def unlink(self, name: str) -> None:
        """Remove a name; a symlink or hard link goes, never what it points to."""
        os.unlink(name, dir_fd=self.fd)

    def rename(self, name: str, new: str) -> None:
        os.rename(name, new, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def rmtree(self, name: str, *, ignore_errors: bool = False) -> None:
        """Remove a subfolder and everything in it. With ``dir_fd``, rmtree walks by
        descriptors: it refuses a symlink as ``name`` and unlinks symlinks inside."""
        shutil.rmtree(name, ignore_errors=ignore_errors, dir_fd=self.fd)


def open_root(root: Path, *, create: bool = False) -> Folder:
    """The configuration directory (``root`` resolved already); FileNotFoundError when it
    does not exist and ``create`` is false."""
    if create:
        with contextlib.suppress(FileExistsError):  # a dangling symlink: refused just below
            root.mkdir(parents=True, exist_ok=True)
    try:
        return Folder(os.open(root, DIR_FLAGS), "")
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        raise OutsideConfigDir(
            f"The configuration directory {root} has been replaced by a symbolic link or a file "
            "since the server started"
        ) from None
