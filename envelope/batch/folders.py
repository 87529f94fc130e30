"""``-r`` over a local folder: the regular files under it, and a report of everything left out.

- Hidden files and folders (names starting with ".") are included; envelope's own temporary files
  (``*.envelope-tmp``) are not.
- FIFOs, sockets and devices are skipped, each reported: reading them would block or never end.
- A symlink to a file inside the named folder is processed like the file; a symlink that leads outside the
  folder, and a symlink to a folder, are skipped and reported, unless ``--follow-symlinks``: then links are
  followed wherever they lead, as if they were what they point to (as ``find -L`` does: a folder reached by
  two names is processed under both), except a link to a folder the walk is already inside (a loop), which is
  skipped and reported.
- A dangling symlink is skipped and reported.
"""

from __future__ import annotations

import os
import stat

from .locations import Entry, FileProblem, Walk
from .tempfiles import TEMP_SUFFIX

__all__ = ["walk_folder"]

_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
            (stat.S_ISBLK, "a device"))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def walk_folder(root: str, walk: Walk) -> list[Entry]:
    """Entries for the regular files under ``root``, sorted by path, with paths relative to ``root``."""
    found: list[Entry] = []
    real_root = os.path.realpath(root)

    def visit(folder: str, prefix: str, ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            raise FileProblem("cannot read folder", exc, folder) from None
        for entry in entries:
            rel = prefix + entry.name
            try:
                if entry.name.endswith(TEMP_SUFFIX):
                    continue
                link = entry.is_symlink()
                if link:
                    try:
                        info = os.stat(entry.path)
                    except FileNotFoundError:
                        walk.skipped(entry.path, "a dangling symlink")
                        continue
                    outside = not _inside(os.path.realpath(entry.path), real_root)
                    if not walk.follow_symlinks and (outside or stat.S_ISDIR(info.st_mode)):
                        what = "a symlink that leads outside" if outside else "a symlink to a folder in"
                        walk.skipped(entry.path, f"{what} {root!r} (add --follow-symlinks to follow it)")
                        continue
                else:
                    info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    key = (info.st_dev, info.st_ino)
                    if key in ancestors:
                        walk.skipped(entry.path, "a symlink loop (a link to a folder it is in)")
                    else:
                        visit(entry.path, rel + os.sep, ancestors | {key})
                elif stat.S_ISREG(info.st_mode):
                    found.append(Entry(os.path.join(root, rel), rel, info.st_size, (info.st_dev, info.st_ino)))
                else:
                    walk.skipped(entry.path, next((name for test, name in _SPECIAL if test(info.st_mode)),
                                                  "not a regular file"))
            except OSError as exc:
                raise FileProblem("cannot read", exc, entry.path) from None

    top = os.stat(root)
    visit(root, "", frozenset({(top.st_dev, top.st_ino)}))
    return found
