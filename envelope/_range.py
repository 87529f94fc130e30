"""Authenticated byte ranges: decrypt bytes START..END of a message's plaintext, reading only the frames that
hold them.

A framed body (esdk-format.md section 3.1) is a run of regular frames of exactly ``frame_length`` plaintext
bytes, each at a fixed offset, and one final frame of 0 to ``frame_length`` bytes. So plaintext byte ``p`` is
in frame ``p // frame_length + 1``, and that frame starts ``(p // frame_length) * (frame_length + 32)``
bytes into the body. Every frame's tag covers the message ID, its sequence number and its length (the body
AAD), so a frame verified at the position it was read from is exactly the plaintext the writer put there.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._api import (  # the header steps of decrypt_stream, shared
    DEFAULT_MAX_ENCRYPTED_DATA_KEYS,
    DEFAULT_MAX_FRAME_LENGTH,
    DEFAULT_MAX_HEADER_LENGTH,
    _manager,
    _open_message,
    read_header,
)
from ._format import (
    FINAL_FRAME_MARKER,
    FINAL_LENGTH,
    FINAL_OVERHEAD,
    FINAL_PREFIX,
    MAX_REGULAR_FRAMES,
    REGULAR_OVERHEAD,
    Header,
    check_final_sequence,
    regular_frames,
    serialize_header_auth,
)
from ._keyrings.base import Keyring
from ._materials import MaterialsManager
from ._stream import (
    BATCH_BYTES,
    Source,
    _open_batch,
    _open_final,
    alloc_buffer,
    write_all,
)
from ._suites import CommitmentPolicy, resolve_policy
from .errors import FormatError, PolicyError, TruncatedError, UsageError

__all__ = ["RangeResult", "decrypt_range"]


class SeekableSource(Protocol):
    """What :func:`decrypt_range` reads: a seekable binary file (``open(path, "rb")``, ``io.BytesIO``,
    :class:`envelope.s3.S3Reader`)."""

    def readinto(self, buffer: Any, /) -> int | None: ...

    def seek(self, offset: int, whence: int = ..., /) -> int: ...

    def tell(self) -> int: ...


class Sink(Protocol):
    def write(self, data: Any, /) -> Any: ...


@dataclass(frozen=True)
class RangeResult:
    """What :func:`decrypt_range` wrote: plaintext bytes ``start`` to ``end`` (inclusive, after clipping).

    ``plaintext_length`` is the message's authenticated plaintext length when the final frame was read (the
    range reached it, or was open-ended), else None. ``frames`` counts the frames decrypted and verified.
    """

    header: Header
    start: int
    end: int
    bytes_written: int
    plaintext_length: int | None
    frames: int


class _Replay:
    """The header bytes already read, then the rest of the source: lets the header be parsed a second time by
    the shared decrypt steps without reading it again."""

    def __init__(self, head: bytes, rest: Source) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        if len(self._head):
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._rest.readinto(view)


def _check_bounds(start: Any, end: Any) -> tuple[int, int | None]:
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise UsageError(f"the range start must be an integer of 0 or more, not {start!r}")
    if end is not None and (isinstance(end, bool) or not isinstance(end, int) or end < start):
        raise UsageError(f"the range end must be None or an integer of at least the start ({start}), not {end!r}")
    return start, end


def _read_at(source: SeekableSource, offset: int, view: memoryview, field: str, message_offset: int) -> None:
    """Read exactly ``len(view)`` bytes at absolute ``offset``; a short read is a truncated message."""
    source.seek(offset)
    done = 0
    while done < len(view):
        got = source.readinto(view[done:])
        if not got:
            raise TruncatedError(field, message_offset, message_offset + len(view))
        done += got


def decrypt_range(
    source: SeekableSource,
    destination: Sink,
    start: int,
    end: int | None = None,
    *,
    keyring: Keyring | None = None,
    materials_manager: MaterialsManager | None = None,
    commitment_policy: CommitmentPolicy | str | None = None,
    required_context: Mapping[str, str | None] | None = None,
    reproduced_context: Mapping[str, str] | None = None,
    max_encrypted_data_keys: int | None = DEFAULT_MAX_ENCRYPTED_DATA_KEYS,
    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    max_header_length: int = DEFAULT_MAX_HEADER_LENGTH,
) -> RangeResult:
    """Write plaintext bytes ``start`` to ``end`` (inclusive; ``end`` None: to the end) of the message in
    ``source`` to the binary file ``destination``, reading only the header and the frames that hold them.

    ``source`` is any seekable binary file, or an :class:`envelope.s3.S3Reader` (then only those bytes are
    fetched, with ranged GETs). The message is the whole of ``source``, from offset 0 to its end, wherever
    the source is positioned (so a source can serve several ranges, also after one failed).

    What is verified: the header, exactly as :func:`envelope.decrypt_stream` verifies it (limits, commitment
    policy, ``required_context``, key commitment, header tag), and the tag of every frame the range touches.
    No byte of a frame is written before that frame's tag verified; as with ``decrypt_stream``, frames are
    verified in batches and a batch is written once all its tags verified, so on an error ``destination`` may
    hold the verified bytes of the range before the bad batch (a range that fits in one batch of 4 MiB writes
    nothing). The range is authenticated, not the whole message: frames outside the range are not read, so a
    message damaged elsewhere still gives a correct range, by design.

    Ranges behave as HTTP ranges do: an ``end`` past the end of the plaintext is clipped to it, and a
    ``start`` at or past it is a :class:`~envelope.errors.UsageError` (so is any range of an empty plaintext).
    To clip honestly the plaintext length must itself be authenticated, and the object's size alone does not
    authenticate it (bytes can be cut off or appended): whenever the range reaches the final frame (or is
    open-ended) the final frame is read and verified, and its tag covers its sequence number and its length,
    hence the length of the whole plaintext. A range that ends before the final frame needs no length: each
    frame it reads is verified at the position and with the sequence number the range asked for.

    Refused with a :class:`~envelope.errors.PolicyError`, before any key is used: signed suites (the
    signature covers the whole message, so no part can be trusted without reading all of it: use
    ``decrypt_stream``) and non-framed messages (one AES-GCM block, verifiable only whole).
    ``keyring`` / ``materials_manager``, ``commitment_policy``, ``required_context``, ``reproduced_context``
    (section 6.4) and the limits are those of :func:`envelope.decrypt_stream`.
    """
    start, end = _check_bounds(start, end)
    manager = _manager(keyring, materials_manager)
    seekable = getattr(source, "seekable", None)
    if seekable is not None and not seekable():
        raise UsageError("decrypt_range needs a seekable source (a file or an S3 object, not a pipe)")
    fetch_end = getattr(source, "set_fetch_end", None)  # S3Reader: make each span one GET of exactly its bytes
    base = 0
    source.seek(base)
    header, auth, rest = read_header(source, max_encrypted_data_keys=max_encrypted_data_keys,  # type: ignore[arg-type]
                                     max_header_length=max_header_length)
    suite = header.suite
    if not header.framed:
        raise PolicyError("cannot decrypt a range of a non-framed message: its body is one AES-GCM block that "
                          "can only be verified whole (decrypt the whole message instead)")
    if suite.signed:
        raise PolicyError(f"cannot decrypt a range of a message with signed suite {suite.hex_id}: the signature "
                          "covers the whole message, so no part of it can be trusted without reading all of it "
                          "(decrypt the whole message instead)")
    head = header.raw + serialize_header_auth(header, auth)
    opened = _open_message(_Replay(head, rest), manager, resolve_policy(commitment_policy),  # type: ignore[arg-type]
                           required_context, True, max_encrypted_data_keys, max_frame_length, max_header_length,
                           reproduced_context)
    aead, message_id = opened.aead, header.message_id
    f = header.frame_length
    r = f + REGULAR_OVERHEAD
    h = len(head)

    # the layout the source's size implies (verified below wherever it is relied on)
    size = source.seek(0, io.SEEK_END) - base
    body = size - h
    if body < FINAL_OVERHEAD:
        raise TruncatedError("final frame", h, h + FINAL_OVERHEAD)
    regular, last_length = divmod(body - FINAL_OVERHEAD, r)
    if last_length > f or regular > MAX_REGULAR_FRAMES:
        raise FormatError("end of message", size, f"a framed body of frame length {f} cannot end here: the "
                          "message was truncated or has bytes appended")
    final_at = h + regular * r
    in_regular = regular * f  # plaintext bytes in the regular frames

    written = 0
    frames = 0
    plaintext_length: int | None = None
    final_plain = b""
    if end is None or end >= in_regular:
        # the range reaches the final frame: read and verify it first, to learn the authenticated length
        frame = memoryview(bytearray(FINAL_OVERHEAD + last_length))
        if fetch_end is not None:
            fetch_end(base + final_at + len(frame))
        _read_at(source, base + final_at, frame, "final frame", final_at)
        marker, seq, _, length = FINAL_PREFIX.unpack_from(frame)  # the IV is read, not checked: section 3.1
        if marker != FINAL_FRAME_MARKER:
            raise FormatError("sequence number", final_at, "is not the final frame marker where the message's size "
                              "puts the final frame: the message was truncated or has bytes appended")
        check_final_sequence(seq, regular + 1, final_at)
        if length != last_length:
            raise FormatError("final frame content length", final_at + FINAL_LENGTH,
                              f"is {length}, but the message's size leaves {last_length} bytes for it")
        plain = bytearray(length)
        _open_final(aead, message_id, frame, memoryview(plain), seq, length)
        frames += 1
        final_plain = bytes(plain)
        plaintext_length = in_regular + length
        if start >= plaintext_length:
            raise UsageError(f"the range starts at byte {start}, at or past the end of the {plaintext_length}-byte "
                             "plaintext")
        end = plaintext_length - 1 if end is None else min(end, plaintext_length - 1)

    assert end is not None  # set above when it was None
    # the regular frames that hold [start, min(end, in_regular - 1)], in batches of whole frames
    if start < in_regular:
        first, last = start // f, min(end, in_regular - 1) // f  # 0-based frame indexes
        per_batch = max(1, BATCH_BYTES // r)
        count_all = last - first + 1
        inbuf = alloc_buffer(min(per_batch, count_all) * r)
        outbuf = alloc_buffer(min(per_batch, count_all) * f)
        if fetch_end is not None:
            fetch_end(base + h + (last + 1) * r)
        index = first
        while index <= last:
            count = min(per_batch, last - index + 1)
            at = h + index * r
            view = inbuf[:count * r]
            _read_at(source, base + at, view, "frame", at)
            if regular_frames(view, f, index + 1, at) != count:  # checks each frame's sequence number
                raise FormatError("sequence number", at, "a final frame marker stands where the message's size puts "
                                  "a regular frame: the message was truncated or has bytes appended")
            _open_batch(aead, message_id, f, view, outbuf, index + 1, count)
            frames += count
            lo = max(start, index * f) - index * f
            hi = min(end, (index + count) * f - 1) - index * f + 1
            write_all(destination.write, outbuf[lo:hi])
            written += hi - lo
            index += count
    if end >= in_regular:
        lo = max(start, in_regular) - in_regular
        piece = memoryview(final_plain)[lo:end - in_regular + 1]
        write_all(destination.write, piece)
        written += len(piece)
    if fetch_end is not None:
        fetch_end(None)
    return RangeResult(header, start, end, written, plaintext_length, frames)
