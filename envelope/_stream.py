"""The frame engine: framed AES-GCM bodies in constant memory (sections 3 and 10).

Knows a derived key, a message ID and a frame length; knows nothing of keyrings or headers.

Frames are processed in batches: one ``readinto`` fills a reused input buffer with several frames, the
batch is sealed or opened into a reused output buffer with ``encrypt_into`` / ``decrypt_into``, and the
batch goes out in one ``write``. AES-GCM in ``cryptography`` releases the GIL, so with ``threads > 0`` the
batches are sealed or opened on worker threads while the calling thread reads, hashes and writes: a
pipeline with ``threads + 1`` buffer slots, written strictly in order.

Release rules (section 10): a decrypted batch is written only after every tag in it verified; the final
frame (and a non-framed body) is written only after ``finish`` returned, which verifies the signature of
signed suites and refuses trailing bytes.
"""

from __future__ import annotations

import mmap
import os
import queue
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._format import (
    BODY_AAD_TAIL,
    FINAL_CONTENT,
    FINAL_FRAME_MARKER,
    FINAL_FRAME_STRING,
    FINAL_IV,
    FINAL_LENGTH,
    FINAL_OVERHEAD,
    FINAL_PREFIX,
    FINAL_SEQUENCE,
    FRAME_STRING,
    IV_LENGTH,
    NON_FRAMED_CONTENT,
    NON_FRAMED_LENGTH,
    REGULAR_CONTENT,
    REGULAR_IV,
    REGULAR_OVERHEAD,
    REGULAR_PREFIX,
    SEQUENCE_NUMBER,
    SINGLE_BLOCK_STRING,
    TAG_LENGTH,
    U32,
    U64,
    WRITER_IV,
    body_aad,
    check_final_length,
    check_final_sequence,
    check_frame_count,
    check_non_framed_length,
    cut_frame_error,
    regular_frames,
    sequence_error,
)
from .errors import AuthenticationError, PolicyError, TruncatedError

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = [
    "BATCH_BYTES",
    "Source",
    "default_threads",
    "open_buffer",
    "open_framed",
    "open_non_framed",
    "pass_framed",
    "pass_non_framed",
    "seal_buffer",
    "seal_framed",
    "sealed_length",
    "write_all",
]

#: Bytes of plaintext per batch (rounded to whole frames, at least one frame).
BATCH_BYTES = 4 * 1024 * 1024
#: Inputs shorter than this (and than one frame) take a path without batch buffers or threads.
SMALL_INPUT = 64 * 1024

Write = Callable[[Any], Any]


class Hasher(Protocol):
    def update(self, data: Any, /) -> None: ...


_HUGE = 2 * 1024 * 1024


def alloc_buffer(size: int) -> memoryview:
    """A reusable zeroed buffer. On Linux it is a private anonymous mapping rounded to 2 MiB (so the kernel
    aligns it to 2 MiB), with MADV_HUGEPAGE on its whole 2 MiB blocks: copies in and out of huge pages avoid TLB
    misses that otherwise cost most of a read or write here (measured: ``readinto`` 1.5 GB/s into a bytearray,
    6-7 GB/s into a huge-page buffer). The last, partial block keeps small pages, so the few bytes a batch's
    frame overhead adds commit 4 KiB rather than a whole huge page (~5 MiB of peak RSS at 1 GiB).

    Private, not ``mmap``'s default MAP_SHARED: a shared anonymous mapping is shmem, which gets no huge pages
    unless ``shmem_enabled`` allows them (``never`` on the development VM), and whose first touch cost ~1.5 ms
    per pair of 4 MiB buffers there against ~0.2 ms private: most of what a 1 MiB file of a ``-r`` run cost."""
    if size >= _HUGE and hasattr(mmap, "MADV_HUGEPAGE"):
        mapping = mmap.mmap(-1, (size + _HUGE - 1) // _HUGE * _HUGE, flags=mmap.MAP_PRIVATE)
        try:
            mapping.madvise(mmap.MADV_HUGEPAGE, 0, size // _HUGE * _HUGE)
        except OSError:
            pass
        return memoryview(mapping)[:size]
    return memoryview(bytearray(size))


_MAIN_THREAD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def worker_signals() -> None:
    """Block SIGINT and SIGTERM in the calling thread (each thread envelope starts calls it first).

    Python runs signal handlers in the main thread only, but Linux delivers a signal sent to the process to
    any thread that does not block it. Taken by a worker, a Ctrl-C does not interrupt the main thread's
    blocking ``read``, so KeyboardInterrupt can come too late or not at all. A test of a library upload
    interrupted mid-way exited 0 instead of 130 in 2 of about 5 full test runs before this."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, _MAIN_THREAD_SIGNALS)


def default_threads() -> int:
    """Worker threads for the AES-GCM pipeline: one per extra core, at most 2."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(2, cores - 1)) if cores > 1 else 0


class Source:
    """A binary input read in whole buffers, with a push-back area for bytes read past a boundary.

    ``position`` is the offset of the next byte from the start of the message, for error messages.
    """

    def __init__(self, raw: BinaryIO, prefix: bytes | bytearray | memoryview = b"", position: int = 0) -> None:
        self._raw = raw
        self._readinto = getattr(raw, "readinto", None)
        self._pending = memoryview(bytes(prefix))
        self.position = position

    def _raw_readinto(self, view: memoryview) -> int:
        if self._readinto is not None:
            got = self._readinto(view)
        else:
            data = self._raw.read(len(view))
            got = len(data)
            view[:got] = data
        if got is None:
            raise OSError("the input is in non-blocking mode and has no data")
        return int(got)

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Fill ``buf`` completely unless the input ends first; returns the number of bytes read."""
        view = memoryview(buf).cast("B")
        n = 0
        if len(self._pending):
            n = min(len(self._pending), len(view))
            view[:n] = self._pending[:n]
            self._pending = self._pending[n:]
        while n < len(view):
            got = self._raw_readinto(view[n:])
            if not got:
                break
            n += got
        self.position += n
        return n

    def unread(self, data: bytes | bytearray | memoryview) -> None:
        """Push bytes back so that the next read returns them first."""
        self._pending = memoryview(bytes(data) + bytes(self._pending))
        self.position -= len(data)

    def read_exact(self, n: int, field: str) -> bytearray:
        """Read exactly ``n`` bytes, growing the buffer only as data arrives (never trust a declared length)."""
        start = self.position
        out = bytearray()
        chunk = bytearray(min(n, 1 << 20))
        while len(out) < n:
            want = min(len(chunk), n - len(out))
            got = self.readinto(memoryview(chunk)[:want])
            out += memoryview(chunk)[:got]
            if got < want:
                raise TruncatedError(field, start, start + n)
        return out

    def at_eof(self) -> bool:
        probe = bytearray(1)
        if self.readinto(probe):
            self.unread(probe)
            return False
        return True


def write_all(write: Write, data: memoryview | bytes) -> None:
    """Write every byte: raw (unbuffered) files and pipes may accept fewer bytes than offered."""
    written = write(data)
    if written is None or written >= len(data):
        return
    view = memoryview(data)
    while written < len(view):
        more = write(view[written:])
        if not more:
            raise OSError("the output accepted no more bytes")
        written += more


# ---------------------------------------------------------------------------------------------------------
# the pipeline shared by both directions


class _Pipeline:
    """Batches flow: caller reads -> ``threads`` crypto workers -> one writer thread, in submission order.

    Reading, AES-GCM and writing all release the GIL, so the three overlap on separate cores. With
    ``threads == 0`` everything runs inline on the caller's thread (the one-shot API uses this).
    ``done(slot, n)`` runs on the writer thread (or inline) for each batch, in order; the slot is then free
    for the caller to refill. The first error anywhere stops the pipeline and is re-raised to the caller.

    A signed suite's hash (``hasher``) gets a thread of its own: it is the slowest stage (SHA-384 runs at
    about a fifth of AES-GCM's rate), so on the writer thread it would add its time to every write. Each
    batch goes to :meth:`hash` once, in order (decrypt: the input batch as it is submitted, so it is hashed
    while it is opened; encrypt: the sealed batch, from ``done``); a slot is free again only once both its
    write and its hash are done. hashlib releases the GIL for buffers over 2 KiB.
    """

    def __init__(self, threads: int, slots: int, done: Callable[[int, int], None],
                 hasher: Hasher | None = None) -> None:
        self.done = done
        self.threads = threads
        self.hasher = hasher
        self.threaded = False  # threads start with the first batch that is not the last one
        self.free: queue.Queue[int] = queue.Queue()
        for slot in range(slots):
            self.free.put(slot)
        self.error: BaseException | None = None
        self._hashing: threading.Thread | None = None
        self._busy = [0] * slots  # per slot: the write and the hash not yet done
        self._lock = threading.Lock()

    def _start(self) -> None:
        from concurrent.futures import ThreadPoolExecutor  # imported here: it costs start-up time (logging)

        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="envelope-crypto", initializer=worker_signals)
        self.ordered: queue.Queue[tuple[Future[int], int] | None] = queue.Queue()
        self.writer = threading.Thread(target=self._write_loop, name="envelope-writer", daemon=True)
        if self.hasher is not None:
            self.to_hash: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
            self._hashing = threading.Thread(target=self._hash_loop, name="envelope-hash", daemon=True)
            self._hashing.start()
        self.threaded = True  # only once both exist: close() relies on them
        self.writer.start()

    def _write_loop(self) -> None:
        worker_signals()
        while True:
            item = self.ordered.get()
            if item is None:
                return
            job, slot = item
            if self.error is None:
                try:
                    self.done(slot, job.result())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    self.error = exc
            self._settle(slot)

    def _hash_loop(self) -> None:
        assert self.hasher is not None
        worker_signals()
        update = self.hasher.update
        while True:
            item = self.to_hash.get()
            if item is None:
                return
            view, slot = item
            if self.error is None:
                try:
                    update(view)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    self.error = exc
            self._settle(slot)

    def _settle(self, slot: int) -> None:
        """One of the slot's jobs (write, hash) is done; the last one frees the slot."""
        with self._lock:
            self._busy[slot] -= 1
            free = self._busy[slot] == 0
        if free:
            self.free.put(slot)

    def hash(self, slot: int, view: memoryview) -> None:
        """Feed ``view`` (a batch of ``slot``) to the hasher, after every batch fed before it."""
        assert self.hasher is not None
        if self._hashing is None:
            self.hasher.update(view)
            return
        with self._lock:
            self._busy[slot] += 1
        self.to_hash.put((view, slot))

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def next_slot(self) -> int:
        slot = self.free.get()
        self._check()
        return slot

    def release(self, slot: int) -> None:
        self.free.put(slot)

    def submit(self, slot: int, last: bool, fn: Callable[..., int], *args: Any,
               hash_first: memoryview | None = None) -> None:
        """Run ``fn(*args)`` for ``slot``; ``hash_first`` (the input batch) is hashed meanwhile. A message
        that fits in one batch never starts a thread."""
        if not self.threaded and self.threads and not last:
            self._start()
        if self.threaded:
            self._busy[slot] = 1  # its write: no job of this slot is pending, so no lock is needed
            if hash_first is not None:
                self.hash(slot, hash_first)
            self.ordered.put((self.pool.submit(fn, *args), slot))
        else:
            if hash_first is not None:
                self.hash(slot, hash_first)
            self.done(slot, fn(*args))
            self.free.put(slot)

    def _stop_hashing(self) -> None:
        if self._hashing is not None:
            self.to_hash.put(None)
            self._hashing.join()
            self._hashing = None

    def drain(self) -> None:
        """Wait until every submitted batch is written and hashed; re-raise the first error."""
        if self.threaded:
            self.ordered.put(None)
            self.writer.join()
            self._stop_hashing()
        self._check()

    def close(self) -> None:
        if self.threaded:
            if self.writer.is_alive():
                self.error = self.error or _Stopped()
                self.ordered.put(None)
                self.writer.join()
            if self._hashing is not None:
                self.error = self.error or _Stopped()
                self._stop_hashing()
            self.pool.shutdown(wait=True, cancel_futures=True)
        # the error's traceback refers to the frames that hold the buffers: drop it so a failed message's
        # mappings are freed now, not at the next cycle collection
        self.error = None


class _Stopped(Exception):
    """Marks a pipeline torn down by an error on the caller's side."""


def _per_batch(frame_length: int) -> int:
    """Regular frames per batch. A batch is sized by its wire bytes (each frame adds 32 bytes), so tiny frame
    lengths cannot blow the buffers up: at frame length 1, sizing by plaintext would map 132 MiB per slot."""
    return max(1, BATCH_BYTES // (frame_length + REGULAR_OVERHEAD))


def _slot_count(frame_length: int, threads: int) -> tuple[int, int]:
    """(frames per batch, buffer slots). Frames larger than a batch run serially in one slot."""
    per_batch = _per_batch(frame_length)
    if frame_length > BATCH_BYTES:
        return per_batch, 1
    return per_batch, threads + 2 if threads else 1


# ---------------------------------------------------------------------------------------------------------
# encrypt (section 3.1 writer rules)


def _seal_batch(aead: AESGCM, message_id: bytes, frame_length: int, src: memoryview, out: memoryview,
                first_seq: int, final: bool) -> int:
    """Seal ``src`` into ``out`` as regular frames, plus the final frame when ``final``; returns bytes out."""
    f = frame_length
    r = f + REGULAR_OVERHEAD
    frame_aad = message_id + FRAME_STRING
    full = len(src) // f
    # bound once: the loop runs per frame
    pack_prefix, writer_iv, aad_tail, encrypt_into = REGULAR_PREFIX.pack_into, WRITER_IV.pack, BODY_AAD_TAIL.pack, \
        aead.encrypt_into
    content = REGULAR_CONTENT
    o = 0
    seq = first_seq
    for i in range(full):
        pack_prefix(out, o, seq, seq)
        encrypt_into(writer_iv(seq), src[i * f:(i + 1) * f], frame_aad + aad_tail(seq, f), out[o + content:o + r])
        o += r
        seq += 1
    if final:
        rest = src[full * f:]
        n = len(rest)
        FINAL_PREFIX.pack_into(out, o, FINAL_FRAME_MARKER, seq, seq, n)
        encrypt_into(writer_iv(seq), rest, body_aad(message_id, FINAL_FRAME_STRING, seq, n),
                     out[o + FINAL_CONTENT:o + FINAL_CONTENT + n + TAG_LENGTH])
        o += n + FINAL_OVERHEAD
    return o


def seal_framed(src: Source, write: Write, aead: AESGCM, message_id: bytes, frame_length: int, *,
                hasher: Hasher | None = None, threads: int = 0, length_hint: int | None = None) -> tuple[int, int]:
    """Read plaintext from ``src`` until it ends and write the framed body.

    Every full frame is a regular frame; what is left, possibly nothing, is the final frame (the layout the
    ESDK for Python writes). ``length_hint`` (the expected plaintext length, if known) only sizes the first
    read. Returns (plaintext bytes, body bytes written). ``frame_length`` is one the API accepted
    (:func:`envelope._format.check_frame_length`).
    """
    f = frame_length
    # Small inputs (the data-key cache's many small messages) are sealed from one small read, without mapping
    # batch buffers or starting threads.
    probe_size = min(SMALL_INPUT, f) if length_hint is None else min(SMALL_INPUT, f, length_hint)
    probe = bytearray(probe_size + 1)
    n = src.readinto(probe)
    if n < len(probe):
        out = bytearray(n + REGULAR_OVERHEAD + FINAL_OVERHEAD)
        size = _seal_batch(aead, message_id, f, memoryview(probe)[:n], memoryview(out), 1, True)
        view = memoryview(out)[:size]
        if hasher is not None:
            hasher.update(view)
        write_all(write, view)
        return n, size
    src.unread(probe)
    per_batch, nslots = _slot_count(f, threads)
    slots = [(alloc_buffer(per_batch * f), alloc_buffer(per_batch * (f + REGULAR_OVERHEAD) + FINAL_OVERHEAD))
             for _ in range(nslots)]
    totals = [0, 0]

    def done(slot: int, n: int) -> None:
        view = memoryview(slots[slot][1])[:n]
        if hasher is not None:
            pipeline.hash(slot, view)  # on its own thread while this batch is written
        write_all(write, view)
        totals[1] += n

    pipeline = _Pipeline(threads if nslots > 1 else 0, nslots, done, hasher)
    seq = 1
    try:
        while True:
            slot = pipeline.next_slot()
            inbuf, outbuf = slots[slot]
            n = src.readinto(inbuf)
            totals[0] += n
            final = n < len(inbuf)
            frames = n // f + (1 if final else 0)
            check_frame_count(seq + frames - 1, final, f)
            pipeline.submit(slot, final, _seal_batch, aead, message_id, f, memoryview(inbuf)[:n],
                            memoryview(outbuf), seq, final)
            seq += frames
            if final:
                break
        pipeline.drain()
    finally:
        pipeline.close()
        slots.clear()  # unmap the batch buffers now: ``done`` and the pipeline refer to each other (a cycle)
    return totals[0], totals[1]


# ---------------------------------------------------------------------------------------------------------
# decrypt (sections 3, 5 steps 6-8, 10)


def _open_batch(aead: AESGCM, message_id: bytes, frame_length: int, src: memoryview, out: memoryview,
                first_seq: int, count: int) -> int:
    """Open ``count`` regular frames from ``src`` into ``out``; raises on the first bad tag."""
    f = frame_length
    r = f + REGULAR_OVERHEAD
    frame_aad = message_id + FRAME_STRING
    aad_tail, decrypt_into = BODY_AAD_TAIL.pack, aead.decrypt_into  # bound once: the loop runs per frame
    iv, content = REGULAR_IV, REGULAR_CONTENT
    for i in range(count):
        o = i * r
        seq = first_seq + i
        try:
            # the IV stored in the frame is used as is (section 3.1: readers must not assume the writer's IV)
            decrypt_into(src[o + iv:o + content], src[o + content:o + r], frame_aad + aad_tail(seq, f),
                         out[i * f:(i + 1) * f])
        except InvalidTag:
            raise AuthenticationError(f"frame {seq} failed to authenticate (the message was changed)") from None
    return count * f


def _read_final_frame(src: Source, expected: int, frame_length: int) -> tuple[bytearray, bytearray, int, int]:
    """The final frame, due as number ``expected``: (its head up to the content, content and tag, its number,
    its content length). A regular frame in its place has fewer than a whole frame's bytes left (a whole one
    would have gone into a batch): the error names the field the input ends in."""
    r = frame_length + REGULAR_OVERHEAD
    start = src.position
    marker = src.read_exact(SEQUENCE_NUMBER.size, "sequence number")
    first = SEQUENCE_NUMBER.unpack(marker)[0]
    if first != FINAL_FRAME_MARKER:
        if first != expected:
            raise sequence_error(first, expected, start)
        have, chunk = len(marker), memoryview(bytearray(min(r, 1 << 16)))
        while have < r and (got := src.readinto(chunk[:min(len(chunk), r - have)])):
            have += got
        raise cut_frame_error(start, have, frame_length)
    head = marker + src.read_exact(FINAL_CONTENT - FINAL_SEQUENCE, "final frame header")
    seq = int(SEQUENCE_NUMBER.unpack_from(head, FINAL_SEQUENCE)[0])
    check_final_sequence(seq, expected, start)
    length = int(U32.unpack_from(head, FINAL_LENGTH)[0])
    check_final_length(length, frame_length, start)
    return head, src.read_exact(length + TAG_LENGTH, "final frame content"), seq, length


def open_framed(src: Source, write: Write, aead: AESGCM, message_id: bytes, frame_length: int, *,
                finish: Callable[[], None], hasher: Hasher | None = None, threads: int = 0) -> int:
    """Decrypt a framed body from ``src``, writing each batch once all its tags verified.

    The final frame is decrypted, then ``finish()`` runs (footer signature, trailing bytes), and only then is
    the final frame written. Returns the number of plaintext bytes written.
    """
    f = frame_length
    r = f + REGULAR_OVERHEAD
    per_batch, nslots = _slot_count(f, threads)
    written = [0]
    expected = 1
    slots: list[tuple[memoryview, memoryview]] = []

    def done(slot: int, n: int) -> None:
        write_all(write, memoryview(slots[slot][1])[:n])
        written[0] += n

    pipeline = _Pipeline(threads if nslots > 1 else 0, nslots, done, hasher)
    try:
        while True:
            # Peek at the next sequence number: a message whose body is only a final frame never allocates
            # buffers for the (possibly large) regular frame length.
            head = src.read_exact(SEQUENCE_NUMBER.size, "sequence number")
            src.unread(head)
            if SEQUENCE_NUMBER.unpack(head)[0] == FINAL_FRAME_MARKER:
                break
            if not slots:
                slots = [(alloc_buffer(per_batch * r), alloc_buffer(per_batch * f)) for _ in range(nslots)]
            slot = pipeline.next_slot()
            inbuf = slots[slot][0]
            batch_start = src.position
            n = src.readinto(inbuf)
            count = regular_frames(inbuf[:n], f, expected, batch_start)
            used = count * r
            if used < n:
                src.unread(memoryview(inbuf)[used:n])
            if count == 0:  # a truncated first frame: the final-frame reader below reports it
                pipeline.release(slot)
                break
            last = used < n or n < len(inbuf)  # the final frame starts in this batch, or the input ended
            # the input bytes of this batch are hashed (in order, on the hash thread) while they are opened
            pipeline.submit(slot, last, _open_batch, aead, message_id, f, memoryview(inbuf)[:used],
                            memoryview(slots[slot][1]), expected, count,
                            hash_first=memoryview(inbuf)[:used] if hasher is not None else None)
            expected += count
            if last:
                break
        pipeline.drain()
    finally:
        pipeline.close()
        slots.clear()  # unmap the batch buffers before the final frame is read, on errors too (see seal_framed)

    head, content, seq, length = _read_final_frame(src, expected, f)
    if hasher is not None:
        hasher.update(head)
        hasher.update(content)
    try:
        plaintext = aead.decrypt(head[FINAL_IV:FINAL_LENGTH], content,
                                 body_aad(message_id, FINAL_FRAME_STRING, seq, length))
    except InvalidTag:
        raise AuthenticationError(f"final frame {seq} failed to authenticate (the message was changed)") from None
    finish()
    write_all(write, plaintext)
    return written[0] + len(plaintext)


def open_non_framed(src: Source, write: Write, aead: AESGCM, message_id: bytes, *, finish: Callable[[], None],
                    max_length: int, hasher: Hasher | None = None) -> int:
    """Section 3.2: the whole body is one block, so it is held until its tag (and signature) verify."""
    start = src.position
    head = src.read_exact(NON_FRAMED_CONTENT, "body IV and content length")
    length = U64.unpack_from(head, NON_FRAMED_LENGTH)[0]
    check_non_framed_length(length, start + NON_FRAMED_LENGTH)
    if length > max_length:
        raise PolicyError(f"the non-framed body is {length} bytes; the limit for one block is {max_length} "
                          "(raise max_frame_length, or --max-frame-length, to read it)")
    content = src.read_exact(length + TAG_LENGTH, "body content")
    if hasher is not None:
        hasher.update(head)
        hasher.update(content)
    try:
        plaintext = aead.decrypt(head[:IV_LENGTH], content, body_aad(message_id, SINGLE_BLOCK_STRING, 1, length))
    except InvalidTag:
        raise AuthenticationError("the message body failed to authenticate (the message was changed)") from None
    finish()
    write_all(write, plaintext)
    return len(plaintext)


# ---------------------------------------------------------------------------------------------------------
# whole messages in memory (the one-shot API): no copies, frames split across cores


def _in_parallel(jobs: list[tuple[Callable[..., int], tuple[Any, ...]]], workers: int) -> None:
    """Run ``fn(*args)`` for every job; re-raise the first failure in job order (so the lowest frame)."""
    if workers <= 1 or len(jobs) <= 1:
        for fn, args in jobs:
            fn(*args)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(workers, len(jobs)), thread_name_prefix="envelope-crypto",
                            initializer=worker_signals) as pool:
        futures = [pool.submit(fn, *args) for fn, args in jobs]
        for future in futures:  # in order: the first error raised is the one of the earliest frames
            future.result()


def sealed_length(plaintext_length: int, frame_length: int) -> int:
    """Bytes of the framed body :func:`seal_framed` / :func:`seal_buffer` write for this much plaintext."""
    full = plaintext_length // frame_length
    return full * (frame_length + REGULAR_OVERHEAD) + (plaintext_length - full * frame_length) + FINAL_OVERHEAD


def seal_buffer(aead: AESGCM, message_id: bytes, frame_length: int, data: memoryview, out: memoryview, *,
                workers: int = 1) -> int:
    """Seal all of ``data`` straight into ``out`` (``sealed_length`` bytes): the same frames as
    :func:`seal_framed`, without reading through buffers; runs of frames go to ``workers`` threads."""
    f = frame_length
    full = len(data) // f
    check_frame_count(full + 1, True, f)
    per = _per_batch(f)
    jobs: list[tuple[Callable[..., int], tuple[Any, ...]]] = []
    for start in range(0, full, per):
        count = min(per, full - start)
        last = start + count == full
        src = data[start * f:] if last else data[start * f:(start + count) * f]
        jobs.append((_seal_batch, (aead, message_id, f, src, out[start * (f + REGULAR_OVERHEAD):], start + 1, last)))
    if not jobs:  # less than one frame: only the final frame
        jobs.append((_seal_batch, (aead, message_id, f, data, out, 1, True)))
    _in_parallel(jobs, workers)
    return sealed_length(len(data), f)


def open_buffer(aead: AESGCM, message_id: bytes, frame_length: int, data: memoryview, layout: tuple[int, int, int],
                out: memoryview, *, workers: int = 1) -> int:
    """Open every frame of a body that :func:`envelope._format.framed_layout` accepted, straight into ``out``.

    Raises :class:`AuthenticationError` naming the earliest frame whose tag fails. Returns plaintext bytes.
    """
    f = frame_length
    r = f + REGULAR_OVERHEAD
    count, length, _ = layout
    per = _per_batch(f)
    jobs: list[tuple[Callable[..., int], tuple[Any, ...]]] = [
        (_open_batch, (aead, message_id, f, data[start * r:(start + min(per, count - start)) * r],
                       out[start * f:], start + 1, min(per, count - start)))
        for start in range(0, count, per)]
    jobs.append((_open_final, (aead, message_id, data[count * r:count * r + FINAL_CONTENT + length + TAG_LENGTH],
                               out[count * f:count * f + length], count + 1, length)))
    _in_parallel(jobs, workers)
    return count * f + length


def _open_final(aead: AESGCM, message_id: bytes, frame: memoryview, out: memoryview, seq: int, length: int) -> int:
    try:
        aead.decrypt_into(frame[FINAL_IV:FINAL_LENGTH], frame[FINAL_CONTENT:],
                          body_aad(message_id, FINAL_FRAME_STRING, seq, length), out)
    except InvalidTag:
        raise AuthenticationError(f"final frame {seq} failed to authenticate (the message was changed)") from None
    return length


# ---------------------------------------------------------------------------------------------------------
# rewrap: a body copied unchanged (envelope._rewrap), its frames walked and optionally authenticated


def _check_batch(aead: AESGCM, message_id: bytes, frame_length: int, src: memoryview, scratch: memoryview,
                 first_seq: int, count: int) -> int:
    """Authenticate ``count`` regular frames (the plaintext goes to ``scratch`` and is thrown away); returns the
    input bytes, which are what a rewrap writes."""
    _open_batch(aead, message_id, frame_length, src, scratch, first_seq, count)
    return count * (frame_length + REGULAR_OVERHEAD)


def _as_is(n: int) -> int:
    return n


def pass_framed(src: Source, write: Write, aead: AESGCM | None, message_id: bytes, frame_length: int, *,
                hashers: tuple[Hasher, ...] = (), threads: int = 0) -> int:
    """Copy a framed body from ``src`` to ``write`` byte for byte (a rewrap), in constant memory.

    The frames are walked as :func:`open_framed` walks them (sequence numbers, the final frame and its length);
    every byte goes to each of ``hashers`` in order (a signed suite's old verifier and new signer); with ``aead``
    every frame's tag is checked too, and a batch is written only once all its tags verified. Returns the body
    bytes copied. The caller reads what follows (footer, end of input).
    """
    f = frame_length
    r = f + REGULAR_OVERHEAD
    per_batch, nslots = _slot_count(f, threads)
    totals = [0]
    expected = 1
    slots: list[tuple[memoryview, memoryview | None]] = []
    # two hashes of every batch (a signed suite's old verifier and new signer): hashlib releases the GIL, so
    # with threads allowed the first runs on a helper thread while the writer thread runs the second
    helper = None
    if threads and len(hashers) > 1:
        from concurrent.futures import ThreadPoolExecutor

        helper = ThreadPoolExecutor(1, thread_name_prefix="envelope-hash", initializer=worker_signals)

    def done(slot: int, n: int) -> None:
        view = memoryview(slots[slot][0])[:n]
        if helper is not None:
            first = helper.submit(hashers[0].update, view)
            for hasher in hashers[1:]:
                hasher.update(view)
            first.result()
        else:
            for hasher in hashers:
                hasher.update(view)
        write_all(write, view)
        totals[0] += n

    pipeline = _Pipeline(threads if nslots > 1 else 0, nslots, done)
    try:
        while True:
            head = src.read_exact(SEQUENCE_NUMBER.size, "sequence number")
            src.unread(head)
            if SEQUENCE_NUMBER.unpack(head)[0] == FINAL_FRAME_MARKER:
                break
            if not slots:
                slots = [(alloc_buffer(per_batch * r), alloc_buffer(per_batch * f) if aead is not None else None)
                         for _ in range(nslots)]
            slot = pipeline.next_slot()
            inbuf, scratch = slots[slot]
            batch_start = src.position
            n = src.readinto(inbuf)
            count = regular_frames(inbuf[:n], f, expected, batch_start)
            used = count * r
            if used < n:
                src.unread(memoryview(inbuf)[used:n])
            if count == 0:  # a truncated first frame: the final-frame reader below reports it
                pipeline.release(slot)
                break
            last = used < n or n < len(inbuf)
            if scratch is not None and aead is not None:
                pipeline.submit(slot, last, _check_batch, aead, message_id, f, memoryview(inbuf)[:used], scratch,
                                expected, count)
            else:
                pipeline.submit(slot, last, _as_is, used)
            expected += count
            if last:
                break
        pipeline.drain()
    finally:
        pipeline.close()
        if helper is not None:
            helper.shutdown(wait=True)
        slots.clear()

    head, content, seq, length = _read_final_frame(src, expected, f)
    if aead is not None:
        try:
            aead.decrypt(head[FINAL_IV:FINAL_LENGTH], content, body_aad(message_id, FINAL_FRAME_STRING, seq, length))
        except InvalidTag:
            raise AuthenticationError(f"final frame {seq} failed to authenticate (the message was changed)") from None
    for hasher in hashers:
        hasher.update(head)
        hasher.update(content)
    write_all(write, memoryview(head))
    write_all(write, memoryview(content))
    return totals[0] + len(head) + len(content)


def pass_non_framed(src: Source, write: Write, aead: AESGCM | None, message_id: bytes, *, max_length: int,
                    hashers: tuple[Hasher, ...] = ()) -> int:
    """Section 3.2, copied unchanged (a rewrap): the block is authenticated only with ``aead``, and then held
    whole (``max_length`` bounds it, as for decrypt); without, it streams through in chunks."""
    start = src.position
    head = src.read_exact(NON_FRAMED_CONTENT, "body IV and content length")
    length = int(U64.unpack_from(head, NON_FRAMED_LENGTH)[0])
    check_non_framed_length(length, start + NON_FRAMED_LENGTH)
    for hasher in hashers:
        hasher.update(head)
    write_all(write, memoryview(head))
    if aead is not None:
        if length > max_length:
            raise PolicyError(f"the non-framed body is {length} bytes; the limit for one block is {max_length} "
                              "(raise max_frame_length, or --max-frame-length, to verify it)")
        content = src.read_exact(length + TAG_LENGTH, "body content")
        try:
            aead.decrypt(head[:IV_LENGTH], content, body_aad(message_id, SINGLE_BLOCK_STRING, 1, length))
        except InvalidTag:
            raise AuthenticationError("the message body failed to authenticate (the message was changed)") from None
        for hasher in hashers:
            hasher.update(content)
        write_all(write, memoryview(content))
        return len(head) + len(content)
    left = length + TAG_LENGTH
    buf = alloc_buffer(min(left, BATCH_BYTES)) if left else memoryview(bytearray(0))
    while left:
        at = src.position
        n = src.readinto(buf[:min(left, len(buf))])
        if n < min(left, len(buf)):
            raise TruncatedError("body content", at, at + left)
        for hasher in hashers:
            hasher.update(buf[:n])
        write_all(write, buf[:n])
        left -= n
    return len(head) + length + TAG_LENGTH
