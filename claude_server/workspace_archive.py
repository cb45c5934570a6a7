"""The workspace as a tar.gz, produced in chunks as the client takes them.

The tree is walked by descriptors, each folder opened from the one above it with
``O_NOFOLLOW``, never by path, so nothing a turn does to the workspace meanwhile leads the
walk outside it. What goes in:

- folders, and regular files with a single link, with their content;
- symlinks, stored as links (their target as written), never followed.

What is left out, because reading it is unsafe or it is not in the workspace at all: FIFOs
(a read blocks until a writer comes), sockets and devices; files with more than one link (one
may be a file outside the workspace under a second name, and no name in the workspace tells
which; a tar hard-link entry would have to point at a name outside); what cannot be read
(permission denied) or vanished during the walk; folders more than MAX_DEPTH deep (each level
holds a descriptor). They are counted and logged once per archive.

Headers come from ``tarfile.TarInfo`` (pax format, like ``tarfile``'s default); the data is
written here so that each step is a bounded piece of work: ``next()`` on an ``Archive`` reads
one folder or one CHUNK_BYTES of a file. A file that shrinks while it is read is padded with
zeros, as GNU tar does; one that grows is stored as long as it was.
"""

from __future__ import annotations

import logging
import os
import stat
import tarfile
import zlib
from collections.abc import Generator, Iterator

from claude_server.config_fs import DIR_FLAGS, READ_FLAGS, describe_mode
from claude_server.workspace_files import CHUNK_BYTES
from claude_server.workspaces import Workspace

log = logging.getLogger(__name__)

MAX_DEPTH = 128
# Level 6, zlib's default: tarfile's 9 costs about twice the CPU for a few per cent less.
GZIP_LEVEL = 6
SKIPPED_LOGGED = 5
NUL_BLOCK = b"\0" * tarfile.BLOCKSIZE


class Archive:
    """An iterator of the tar.gz's chunks (some empty: a step's output may all sit in the
    compressor); ``close`` releases every descriptor, also before the end."""

    def __init__(self, ws: Workspace) -> None:
        self.name = ws.root.name
        self.root_fd = ws.open_root()
        self.skipped: list[str] = []
        self.written = 0
        self.chunks = self._compressed()

    def __next__(self) -> bytes:
        return next(self.chunks)

    def close(self) -> None:
        self.chunks.close()  # its own descriptors: closed by the walk's finally blocks
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def _compressed(self) -> Generator[bytes, None, None]:
        # wbits 31: a gzip wrapper, as tarfile's "w|gz" writes.
        gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        for piece in self._tar():
            self.written += len(piece)
            yield gz.compress(piece)
        end = NUL_BLOCK * 2
        end += b"\0" * (-(self.written + len(end)) % tarfile.RECORDSIZE)
        yield gz.compress(end) + gz.flush()
        if self.skipped:
            log.info(
                "archive of %s left out %d entries: %s%s",
                self.name,
                len(self.skipped),
                "; ".join(self.skipped[:SKIPPED_LOGGED]),
                "; ..." if len(self.skipped) > SKIPPED_LOGGED else "",
            )

    def _tar(self) -> Iterator[bytes]:
        yield header(self.name, os.fstat(self.root_fd), tarfile.DIRTYPE)
        yield from self._folder(self.root_fd, self.name, 1)

    def _folder(self, fd: int, arcname: str, depth: int) -> Iterator[bytes]:
        try:
            with os.scandir(fd) as it:
                names = sorted(entry.name for entry in it)
        except OSError as exc:
            self.skipped.append(f"{arcname}/ ({exc.strerror})")
            return
        for name in names:
            path = f"{arcname}/{name}"
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    yield header(path, st, tarfile.SYMTYPE, os.readlink(name, dir_fd=fd))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if depth >= MAX_DEPTH:
                        self.skipped.append(f"{path}/ (more than {MAX_DEPTH} folders deep)")
                        continue
                    sub = os.open(name, DIR_FLAGS, dir_fd=fd)
                elif not stat.S_ISREG(st.st_mode):
                    self.skipped.append(f"{path} ({describe_mode(st.st_mode)})")
                    continue
                elif st.st_nlink > 1:
                    self.skipped.append(f"{path} ({st.st_nlink} links)")
                    continue
                else:
                    sub = os.open(name, READ_FLAGS, dir_fd=fd)
            except OSError as exc:  # vanished, unreadable, or swapped for what O_NOFOLLOW refuses
                self.skipped.append(f"{path} ({exc.strerror})")
                continue
            try:
                yield from self._opened(sub, path, depth)
            finally:
                os.close(sub)

    def _opened(self, fd: int, path: str, depth: int) -> Iterator[bytes]:
        st = os.fstat(fd)  # what was opened is what counts
        if stat.S_ISDIR(st.st_mode):
            yield header(path, st, tarfile.DIRTYPE)
            yield from self._folder(fd, path, depth + 1)
        elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            yield header(path, st, tarfile.REGTYPE)
            yield from self._content(fd, path, st.st_size)
        else:
            self.skipped.append(f"{path} (replaced while being read)")

    def _content(self, fd: int, path: str, size: int) -> Iterator[bytes]:
        left = size
        short = False
        while left > 0:
            want = min(CHUNK_BYTES, left)
            chunk = b""
            if not short:
                try:
                    chunk = os.read(fd, want)
                except OSError as exc:
                    log.warning("archive of %s: reading %s failed: %s", self.name, path, exc.strerror)
                if not chunk:
                    log.warning("archive of %s: %s shrank while being read; padded with zeros", self.name, path)
                    short = True
            chunk = chunk or b"\0" * want
            left -= len(chunk)
            yield chunk
        yield b"\0" * (-size % tarfile.BLOCKSIZE)


def header(name: str, st: os.stat_result, kind: bytes, linkname: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.size = st.st_size if kind == tarfile.REGTYPE else 0
    info.linkname = linkname
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
