"""Stream adapters that work a batch at a time: an input meter and streaming base64 in both directions.

The library reads with ``readinto`` into its own reused buffers (several MiB per call) and writes whole
batches, so every adapter here costs one Python call per batch, never per byte. Memory stays constant:
base64 is decoded through a fixed chunk buffer and encoded batch by batch with at most 2 bytes carried over.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol, cast

from .locations import FileProblem

__all__ = ["Base64Reader", "Base64Writer", "InputMeter", "OutputWriter", "Readable", "Writable"]


class Readable(Protocol):
    def readinto(self, buf: Any, /) -> int | None: ...


class Writable(Protocol):
    def write(self, data: Any, /) -> int | None: ...

HEAD = 8  # bytes of the input kept for error hints ("not an ESDK message", "looks like base64")
_WHITESPACE = b" \t\r\n\v\f"
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


class InputMeter:
    """Counts the bytes read from ``raw``, keeps the first few, and reports each read to ``on_read``.

    ``location`` names the input in read errors (``cannot read input 'x': ...``). ``size``, when the input's
    length is known, is enforced: reading more, or reaching the end after fewer, means the input changed while
    being read (a file that grew or shrank), which fails before the output is put in place."""

    __slots__ = ("_location", "_on_read", "_prefix", "_raw", "count", "head", "size")

    def __init__(self, raw: Readable | BinaryIO, on_read: Callable[[int], None] | None = None, *,
                 location: str = "-", size: int | None = None) -> None:
        self._raw = cast(Readable, raw)  # binary files have readinto; typing.BinaryIO does not say so
        self._on_read = on_read
        self._location = location
        self.size = size
        self.count = 0
        self.head = b""
        self._prefix = True  # every byte read so far is the next one of the input (see seek)

    def readinto(self, buf: Any) -> int:
        try:
            got = self._raw.readinto(buf)
        except OSError as exc:
            if isinstance(exc, FileProblem):
                raise
            raise FileProblem("cannot read input", exc, self._location) from None
        if got is None:
            raise BlockingIOError(11, "the input is in non-blocking mode and has no data")
        if got:
            if len(self.head) < HEAD:
                self.head += bytes(memoryview(buf).cast("B")[:min(got, HEAD - len(self.head))])
            self.count += got
            if self._on_read is not None:
                self._on_read(got)
            if self.size is not None and self.count > self.size:
                raise self._changed("more")
        elif self.size is not None and self.count != self.size and len(memoryview(buf)):
            raise self._changed(str(self.count))
        return int(got)

    def _changed(self, read: str) -> FileProblem:
        return FileProblem("cannot read input", OSError(None, f"it changed while being read (it had {self.size} "
                                                              f"bytes when opened, {read} were read)"),
                           self._location)

    def seekable(self) -> bool:
        seekable = getattr(self._raw, "seekable", None)
        return bool(seekable()) if seekable is not None else False

    def fileno(self) -> int:
        """For a reader that copies part of the input by descriptor (:func:`envelope.rewrap_stream` copies an
        unsigned body from file to file in the kernel): it asks for the descriptor and where the input is,
        copies, then seeks past what it copied (see :meth:`seek`)."""
        return int(self._raw.fileno())  # type: ignore[attr-defined]

    def tell(self) -> int:
        return int(self._raw.tell())  # type: ignore[attr-defined]

    def set_fetch_end(self, end: int | None) -> None:
        """A read-ahead hint (:meth:`envelope.s3.S3Reader.set_fetch_end`: how far the next reads go), passed on
        when the input takes it; :func:`envelope.decrypt_range` gives it."""
        hint = getattr(self._raw, "set_fetch_end", None)
        if hint is not None:
            hint(end)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Two readers seek. A seek forward from where reading is (a copy by descriptor, as :meth:`fileno`
        says) counts the bytes passed as read, under the same size rule as every other read. Any other seek
        (``decrypt --range`` reads the header, the end and only some frames) means the bytes read are no
        longer a prefix of the input, so the size check stops: what is read then is verified by its frame tags
        (and an S3 object by its ETag)."""
        import io

        before = self.tell() if self._prefix else None
        position = int(self._raw.seek(offset, whence))  # type: ignore[attr-defined]
        if before is None:
            return position
        if whence != io.SEEK_SET or offset < before:
            self._prefix = False
            self.size = None
            return position
        moved = offset - before
        if moved:
            self.count += moved
            if self._on_read is not None:
                self._on_read(moved)
            if self.size is not None and self.count > self.size:
                raise self._changed("more")
        return position

    def read(self, size: int = -1) -> bytes:
        """Only for readers that do not use ``readinto``; the library does."""
        if size is None or size < 0:
            size = 1 << 20
        buf = bytearray(size)
        return bytes(memoryview(buf)[:self.readinto(buf)])


class OutputWriter:
    """The library's view of an output: a write error names the output (``cannot write 'x': No space left on
    device``). One call per batch, as the library writes whole batches."""

    __slots__ = ("_location", "_raw", "_write")

    def __init__(self, raw: BinaryIO, location: str) -> None:
        self._raw = raw
        self._write = raw.write
        self._location = location

    def fileno(self) -> int:
        """For a copy in the kernel (see :meth:`InputMeter.fileno`), which writes at the descriptor's position."""
        return self._raw.fileno()

    def flush(self) -> None:
        try:
            self._raw.flush()
        except OSError as exc:
            raise FileProblem("cannot write", exc, self._location) from None

    def write(self, data: Any) -> int:
        try:
            return self._write(data)
        except OSError as exc:
            if isinstance(exc, FileProblem):
                raise
            raise FileProblem("cannot write", exc, self._location) from None  # keeps errno: EPIPE stays 141


class Base64Writer:
    """Writes the base64 form (no line breaks) of everything written to it; :meth:`finish` adds the padding."""

    def __init__(self, raw: Writable) -> None:
        self._raw = raw
        self._carry = b""
        self.count = 0  # base64 bytes written

    def _emit(self, data: Any) -> None:
        encoded = binascii.b2a_base64(data, newline=False)
        self._raw.write(encoded)
        self.count += len(encoded)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        if self._carry:
            need = 3 - len(self._carry)
            if size < need:
                self._carry += bytes(view)
                return size
            self._emit(self._carry + bytes(view[:need]))
            self._carry = b""
            view = view[need:]
        whole = len(view) - len(view) % 3
        if whole:
            self._emit(view[:whole])
        self._carry = bytes(view[whole:])
        return size

    def finish(self) -> None:
        if self._carry:
            self._emit(self._carry)
            self._carry = b""


class Base64Reader:
    """Decodes base64 from ``raw`` as it is read. Whitespace and line breaks anywhere are ignored; any other
    character outside the base64 alphabet, or data after the padding, is a :class:`FormatError` (exit 1).
    Missing final padding is tolerated."""

    CHUNK = 1 << 20

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._chunk = bytearray(self.CHUNK)
        self._text = b""  # fewer than 4 base64 characters carried to the next chunk
        self._out = memoryview(b"")
        self._eof = False
        self._padded = False
        self._seen = 0  # input bytes consumed, for error offsets

    @staticmethod
    def _error(offset: int, reason: str) -> Exception:
        from envelope import FormatError

        return FormatError("base64 input", offset, reason)

    def _decode(self, text: bytes) -> None:
        try:
            self._out = memoryview(binascii.a2b_base64(text))
        except binascii.Error:
            raise self._error(self._seen, "is not valid base64") from None

    def _fill(self) -> None:
        got = self._raw.readinto(self._chunk) or 0
        if not got:
            self._eof = True
            if self._text:
                if len(self._text) == 1:
                    raise self._error(self._seen, "ends in the middle of a base64 group (truncated)")
                self._decode(self._text + b"=" * (-len(self._text) % 4))
                self._text = b""
            return
        start = self._seen
        self._seen += got
        text = bytes(memoryview(self._chunk)[:got]).translate(None, _WHITESPACE)
        if not text:
            return
        if self._padded and text.strip(b"="):
            raise self._error(start, "has data after the base64 padding")
        bad = text.translate(None, _ALPHABET)
        if bad:
            where = bytes(memoryview(self._chunk)[:got]).find(bad[:1])
            raise self._error(start + where, f"holds {chr(bad[0])!r}, which is not a base64 character "
                                             "(is the input already binary? then leave out --decode)")
        text = self._text + text
        pad = text.find(b"=")
        if pad >= 0:
            if text[pad:].strip(b"=") or len(text) - pad > 2:
                raise self._error(start, "has '=' padding in the middle of the base64 text")
            self._padded = True
        whole = len(text) - len(text) % 4
        self._text = text[whole:]
        if whole:
            self._decode(text[:whole])

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        while not len(self._out) and not self._eof:
            self._fill()
        n = min(len(view), len(self._out))
        view[:n] = self._out[:n]
        self._out = self._out[n:]
        return n
