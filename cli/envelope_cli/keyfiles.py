"""Where ``envelope keygen`` writes a key file, by the same output rules as encrypt and decrypt: a path that
names an open descriptor (``/dev/stdout``) is written through it; a symlink with ``--force`` has the file it
points to replaced, and stays a link; nothing in ``/dev`` or ``/proc`` is created or replaced; a FIFO or device
is refused (print the key file with ``-o -`` instead)."""

from __future__ import annotations

import os
import sys

from envelope.batch.files import STDIO, local_output
from envelope.batch.locations import FileProblem

__all__ = ["KeyFileOutput"]


class KeyFileOutput:
    """One key file to write (``-o`` or ``--public-output``), checked when made, written by :meth:`write`."""

    def __init__(self, location: str, force: bool, *, mode: int = 0o600) -> None:
        from envelope import UsageError

        self.location = location
        self.force = force
        self.mode = mode
        self.path: str | None = None  # the file written, once written (None: printed, or not yet)
        self._created = False
        self.fd = 1 if location == STDIO else None
        if self.fd is not None:
            return
        out = local_output(location)
        self.fd, self.target = out.fd, out.target
        if out.fd is None and out.regular is False:
            raise UsageError(f"output {location!r} is not a regular file; use -o - to print the key file")
        if out.regular and not force:
            raise UsageError(f"output {location!r} already exists (add --force to replace it)")

    def same_as(self, other: KeyFileOutput) -> bool:
        if self.fd is not None or other.fd is not None:
            return self.fd == other.fd
        return os.path.realpath(self.target) == os.path.realpath(other.target)

    def write(self, doc: dict[str, str]) -> None:
        import envelope

        if self.fd is not None:  # "-" or a path naming a descriptor: the text goes through it
            data = envelope.key_file_text(doc).encode()
            try:
                if self.fd == 1:
                    sys.stdout.buffer.write(data)
                    sys.stdout.buffer.flush()
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError as exc:
                raise FileProblem("cannot write key file", exc, self.location) from None
            return
        existed = os.path.lexists(self.target)
        try:
            envelope.write_key_file(self.target, doc, force=self.force, mode=self.mode)
        except FileExistsError:
            raise envelope.UsageError(f"output {self.location!r} already exists (add --force to replace it)"
                                      ) from None
        except OSError as exc:
            raise FileProblem("cannot write key file", exc, self.location) from None
        self.path, self._created = self.location, not existed

    def undo(self) -> None:
        """Remove the file :meth:`write` created (not one it replaced)."""
        if self._created and self.path is not None:
            try:
                os.unlink(self.target)
            except OSError:
                pass
