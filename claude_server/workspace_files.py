"""The files API's work on a workspace: list a folder, read a file, write one, delete one,
and the thread pool all of it runs in. No HTTP here: ``routes/files.py`` parses and renders.

Paths are checked by ``workspaces.Workspace``; every operation then works on names in a
folder's descriptor. A turn's tools run as the server's user and can plant anything in the
workspace, so only what the API can safely hand over is:

- Downloads serve regular files with a single link. A FIFO would block the reading thread
  until a writer came (forever, and the client's leaving does not end a blocked read); a
  device or a socket is not a file either: all 403 ``not_a_regular_file``. Files are opened
  with ``O_NONBLOCK | O_NOFOLLOW`` (a FIFO opens at once) and checked with ``fstat`` before
  a byte is read. A file with more than one link may be a file outside the workspace under a
  second name (``ln /etc/passwd x``), and no name in the workspace tells which: 403
  ``hard_link``.
- Uploads replace a regular file or a symlink (the link itself, never what it points to),
  and nothing else: 403 ``not_a_regular_file`` for a FIFO, a socket or a device. They are
  written to a temporary file in the folder and renamed over the name, which replaces the
  name and never writes through it, so replacing a hard link leaves its other names alone.
- What the system answers about a path the client chose (no such file, a part that is a
  file, a name too long, permission denied) is a 4xx naming the path, never a 500.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar

from claude_server.config_fs import READ_FLAGS, TEMP_FLAGS, describe_mode
from claude_server.errors import ApiError, BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from claude_server.workspaces import InvalidPath, OutsideWorkspace, Target, Workspace

CHUNK_BYTES = 256 * 1024
# Four threads: enough for a few downloads and uploads at once on a small machine; each call
# handed to them is one bounded system call or a few (a 256 KiB read, a folder listing).
FILE_WORKERS = 4
# Mode 0666 less the umask, as for any program that creates a file: a tool reads, runs or
# changes uploads as the server's user.
UPLOAD_MODE = 0o666

P = ParamSpec("P")
T = TypeVar("T")


class NotARegularFile(Forbidden):
    code = "not_a_regular_file"


class HardLinked(Forbidden):
    code = "hard_link"


def refusal(exc: OSError, rel: str) -> ApiError | None:
    """The answer to what the system said about the client's path; None for an error of the
    server's own (a failing disk), which stays a 500."""
    code = exc.errno
    if code == errno.ENOENT:
        return NotFound(f"No file {rel} in the workspace", code="file_not_found")
    if code == errno.ENOTDIR:
        return Conflict(f"A parent of {rel} is a file", code="not_a_directory")
    if code == errno.EISDIR:
        return Conflict(f"{rel} is a directory", code="is_a_directory")
    if code == errno.ENAMETOOLONG:
        return InvalidPath(f"{shortened(rel)}: a name in the path, or the path, is too long")
    if code == errno.ELOOP:
        return OutsideWorkspace(f"{rel} is a symbolic link where the files API follows none")
    if code in (errno.ENXIO, errno.EOPNOTSUPP, errno.ENODEV):  # opening a socket or a device
        return NotARegularFile(f"{rel} is not a regular file")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Forbidden(f"The server may not access {rel}: {exc.strerror}", code="permission_denied")
    if code in (errno.EEXIST, errno.ENOTEMPTY, errno.EBUSY):
        return Conflict(f"{rel}: {exc.strerror}", code="conflict")
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ApiError(f"{rel}: {exc.strerror}", code="insufficient_storage", status=507)
    return None


def shortened(rel: str, chars: int = 80) -> str:
    return rel if len(rel) <= chars else rel[:chars] + "..."


@contextlib.contextmanager
def answering(rel: str) -> Iterator[None]:
    """Turn an OSError about ``rel`` into its ``refusal``."""
    try:
        yield
    except OSError as exc:
        err = refusal(exc, rel)
        if err is None:
            raise
        raise err from None


def refuse_unless_regular(st: os.stat_result, rel: str, doing: str) -> None:
    """403 unless ``st`` is a regular file (a directory is the caller's to decide)."""
    if stat.S_ISLNK(st.st_mode):
        raise NotARegularFile(f"{rel} is a symbolic link: {doing} follows none")
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFile(f"{rel} is {describe_mode(st.st_mode)}: {doing} handles only regular files")


def lstat(folder: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def existing(folder: int, target: Target) -> os.stat_result:
    """What ``target`` is (not followed), or 404 when there is nothing by that name."""
    st = lstat(folder, target.name)
    if st is None:
        raise NotFound(f"No file {target.rel} in the workspace", code="file_not_found")
    return st


def kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def entry(name: str, st: os.stat_result) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind(st.st_mode),
        "size": st.st_size,
        "mtime": datetime.fromtimestamp(st.st_mtime, UTC).isoformat().replace("+00:00", "Z"),
    }


def list_dir(ws: Workspace, rel: str) -> dict[str, Any]:
    """``{"path", "entries"}`` of a folder; symlinks are listed, never followed (the folder
    itself may be a symlink that stays inside the workspace)."""
    target = ws.resolve(rel)
    with answering(target.rel):
        try:
            fd = ws.folder(target.real)
        except NotADirectoryError:
            raise BadRequest(f"{target.rel} is not a directory", code="not_a_directory", field="path") from None
        except FileNotFoundError:
            raise NotFound(f"No directory {target.rel!r} in the workspace", code="file_not_found") from None
        try:
            entries = []
            with os.scandir(fd) as it:
                for child in it:
                    with contextlib.suppress(FileNotFoundError):  # gone since the listing
                        entries.append(entry(child.name, child.stat(follow_symlinks=False)))
        finally:
            os.close(fd)
    return {"path": target.rel, "entries": sorted(entries, key=lambda e: str(e["name"]))}


class Download:
    """An open regular file of the workspace, read in chunks (an iterator), closed by ``close``."""

    def __init__(self, fd: int, name: str, size: int) -> None:
        self.fd = fd
        self.name = name
        self.size = size
        self.left = size  # a file that grows while it is read is sent as long as it was

    @classmethod
    def open(cls, ws: Workspace, rel: str) -> Download:
        target = ws.resolve(rel, allow_root=False)
        with answering(target.rel):
            folder = ws.folder(target.folder)
            try:
                # Looked at before the open too, so that a device is not even opened.
                cls._check(existing(folder, target), target)
                fd = os.open(target.name, READ_FLAGS, dir_fd=folder)
            finally:
                os.close(folder)
        try:
            st = os.fstat(fd)  # what was opened is what counts
            cls._check(st, target)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, target.name, st.st_size)

    @staticmethod
    def _check(st: os.stat_result, target: Target) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise BadRequest(f"{target.rel} is a directory: list it with GET .../files?path=", code="is_a_directory")
        refuse_unless_regular(st, target.rel, "a download")
        if st.st_nlink > 1:
            raise HardLinked(
                f"{target.rel} has {st.st_nlink} links: it may be a file outside the workspace under a "
                "second name, so the files API does not serve it"
            )

    def __next__(self) -> bytes:
        if self.left <= 0:
            raise StopIteration
        chunk = os.read(self.fd, min(CHUNK_BYTES, self.left))
        if not chunk:  # shrunk while being read: the client sees a body shorter than announced
            raise StopIteration
        self.left -= len(chunk)
        return chunk

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True)
class Saved:
    path: str  # resolved: an upload through a symlinked folder names the real one
    size: int
    created: bool


class Upload:
    """A file being uploaded: chunks go to a temporary file in the target's folder, which
    ``commit`` renames over the name; ``close`` without a commit removes it."""

    def __init__(self, target: Target, folder: int, existed: bool, limit: int) -> None:
        self.target = target
        self.folder = folder
        self.existed = existed
        self.limit = limit
        self.size = 0
        self.tmp = f".upload-{uuid.uuid4().hex[:12]}"
        self.fd = os.open(self.tmp, TEMP_FLAGS, UPLOAD_MODE, dir_fd=folder)

    @classmethod
    def begin(cls, ws: Workspace, rel: str, limit: int, declared: int | None) -> Upload:
        """Check the target (parent folders made) and open the temporary file."""
        if declared is not None and declared > limit:
            raise PayloadTooLarge(f"The file is {declared} bytes; at most {limit}", code="file_too_large")
        target = ws.resolve(rel, allow_root=False)
        with answering(target.rel):
            try:
                folder = ws.folder(target.folder, create=True)
            except (NotADirectoryError, FileExistsError):
                raise Conflict(f"A parent of {target.rel} is a file", code="not_a_directory") from None
            try:
                st = cls._check(folder, target)
                return cls(target, folder, st is not None, limit)
            except BaseException:
                os.close(folder)
                raise

    @staticmethod
    def _check(folder: int, target: Target) -> os.stat_result | None:
        st = lstat(folder, target.name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise Conflict(f"{target.rel} is a directory", code="is_a_directory")
        if st is not None and not stat.S_ISLNK(st.st_mode):
            refuse_unless_regular(st, target.rel, "an upload")
        return st

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise PayloadTooLarge(f"The file is larger than {self.limit} bytes", code="file_too_large")
        with answering(self.target.rel):
            view = memoryview(chunk)
            while view:
                view = view[os.write(self.fd, view) :]

    def commit(self) -> Saved:
        """Put the file in place."""
        with answering(self.target.rel):
            os.close(self.fd)
            self.fd = -1
            self._check(self.folder, self.target)  # what may have appeared meanwhile
            os.replace(self.tmp, self.target.name, src_dir_fd=self.folder, dst_dir_fd=self.folder)
            self.tmp = ""
        return Saved(self.target.real_rel, self.size, not self.existed)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp, dir_fd=self.folder)
            self.tmp = ""
        if self.folder >= 0:
            os.close(self.folder)
            self.folder = -1


def delete(ws: Workspace, rel: str) -> None:
    """Remove a file, a link (never what it points to) or a folder with all it holds."""
    target = ws.resolve(rel, allow_root=False)
    with answering(target.rel):
        folder = ws.folder(target.folder)
        try:
            if stat.S_ISDIR(existing(folder, target).st_mode):
                # With dir_fd, rmtree walks by descriptors and unlinks the symlinks inside.
                shutil.rmtree(target.name, dir_fd=folder)
            else:
                os.unlink(target.name, dir_fd=folder)
        finally:
            os.close(folder)


class Closable(Protocol):
    def close(self) -> None: ...


class Source(Closable, Protocol):
    """What a ``FilePool`` streams: chunks by blocking calls (an iterator)."""

    def __next__(self) -> bytes: ...


C = TypeVar("C", bound=Closable)
S = TypeVar("S", bound=Source)


class FilePool:
    """The threads the files API blocks in.

    Not the event loop's default executor: a read that blocks (before the checks above, a
    FIFO blocked a thread forever; six of them filled the default pool and held up cleaning
    after cancelled turns by 12 to 39 s) or many slow calls then wait for these few threads
    only, and nothing else in the server waits for them. (The turn reaper has a thread of its
    own too.) Streams hand each chunk to the pool separately, so a slow client holds no thread.
    """

    def __init__(self, workers: int = FILE_WORKERS) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="files")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.wrap_future(self.executor.submit(functools.partial(fn, *args, **kwargs)))

    async def open(self, fn: Callable[P, C], *args: P.args, **kwargs: P.kwargs) -> Pooled[C]:
        """What ``fn`` opens, to be used through the pool; closed even when the caller is
        cancelled while it is being opened (the thread goes on and opens it anyway)."""
        future = self.executor.submit(functools.partial(fn, *args, **kwargs))
        try:
            return Pooled(self, await asyncio.wrap_future(future))
        except asyncio.CancelledError:
            future.add_done_callback(_close_result)
            raise

    def stream(self, source: Pooled[S]) -> PooledBody[S]:
        """``source``'s chunks as an async iterator, each read in the pool."""
        return PooledBody(source)

    def close(self) -> None:
        # Not waiting: a call still stuck in a thread must not hold up the shutdown.
        self.executor.shutdown(wait=False, cancel_futures=True)


def _close_result(future: concurrent.futures.Future[C]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


class Pooled(Generic[C]):
    """A resource used from the event loop one pool call at a time. ``close`` (or leaving a
    ``with`` block) closes it at once when no call is under way, else once the call under way
    has finished: a thread cannot be interrupted, and closing a descriptor under a read or a
    write could send that call to whatever file gets the number next."""

    def __init__(self, pool: FilePool, resource: C) -> None:
        self.pool = pool
        self.resource = resource
        self.busy: concurrent.futures.Future[Any] | None = None
        self.closed = False

    async def call(self, fn: Callable[Concatenate[C, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        assert not self.closed and (self.busy is None or self.busy.done()), "one call at a time"
        future = self.pool.executor.submit(functools.partial(fn, self.resource, *args, **kwargs))
        self.busy = future
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.busy is not None and not self.busy.done():
            self.busy.add_done_callback(lambda _: self.resource.close())
        else:
            self.resource.close()

    def __enter__(self) -> Pooled[C]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def next_chunk(source: Source) -> bytes | None:
    return next(source, None)


class PooledBody(Generic[S]):
    """A pooled source's chunks as an async iterator (a ``streaming.Body``); ``aclose``
    closes the source."""

    def __init__(self, source: Pooled[S]) -> None:
        self.source = source

    def __aiter__(self) -> PooledBody[S]:
        return self

    async def __anext__(self) -> bytes:
        while (chunk := await self.source.call(next_chunk)) is not None:
            if chunk:
                return chunk
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.source.close()
