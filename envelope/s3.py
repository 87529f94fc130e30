"""S3 objects as message sources and destinations: stream to and from buckets, atomically, in bounded memory.

An ESDK message needs no object metadata or instruction file (its keys and context are in its header), so an
encrypted object is just the message's bytes::

    import envelope, envelope.s3

    keyring = envelope.KmsKeyring(["alias/app"])
    with open("big.tar", "rb") as f:  # local file -> S3
        envelope.s3.encrypt_object(f, "s3://bucket/big.tar.encrypted", keyring=keyring, context={"app": "x"})
    with open("big.tar", "wb") as out:  # S3 -> local file
        envelope.s3.decrypt_object("s3://bucket/big.tar.encrypted", out, keyring=keyring)
    envelope.s3.decrypt_object("s3://a/x.encrypted", "s3://b/x", keyring=keyring)  # S3 -> S3

    # any byte range of the plaintext, every byte of it authenticated (see envelope.decrypt_range)
    with envelope.s3.S3Reader("s3://bucket/big.tar.encrypted") as src, open("part", "wb") as out:
        envelope.decrypt_range(src, out, 1_000_000, 1_999_999, keyring=keyring)

The parts, for callers that wire their own streams (the CLI does):

* :func:`parse_s3_url` / :class:`S3Url`: ``s3://BUCKET/KEY`` and ``s3://BUCKET/PREFIX/``. A malformed URL is a
  :class:`~envelope.errors.UsageError`. The key is taken literally (no percent-decoding; ``?`` and ``#`` are
  part of it).
* :class:`S3Reader`: a seekable binary file over one object (``readinto`` / ``read`` / ``seek`` / ``tell`` /
  ``size``), read with ranged GETs streamed into the caller's buffers. It is a source for
  :func:`envelope.decrypt_stream`, :func:`envelope.read_header` (which then fetches only the header) and
  :func:`envelope.decrypt_range` (which then fetches only the frames that hold the range).
* :class:`S3Writer`: a binary file that becomes one object. ``write()`` fills part buffers that are uploaded
  as a multipart upload while more is written (at most :data:`PARTS_IN_FLIGHT` parts at once), and the object
  appears only at :meth:`S3Writer.commit`, which completes the upload. :meth:`S3Writer.abort` (or any error)
  aborts it: no object, no pending multipart upload. A message that fits in one part goes in one PutObject at
  commit. An existing object is replaced only with ``force=True``; the check is a conditional write
  (``If-None-Match: *`` on PutObject / CompleteMultipartUpload), so an object created by someone else
  meanwhile is not replaced either.
* :func:`list_objects`: the objects below a prefix (paginated ListObjectsV2), with their sizes and the key
  relative to the prefix; :func:`find_object`: one object's size and ETag (HEAD), or None when it is absent.
* :func:`abort_all_uploads`: the hook for signal handling (below).

**Atomicity.** An object written through :class:`S3Writer` exists only once the whole message was written
and, when decrypting, verified: :func:`decrypt_object` commits only after :func:`envelope.decrypt_stream`
returned, that is after every frame tag and the signature verified. Parts already uploaded are plaintext of
authenticated frames, held by S3 as parts of a pending upload, never as an object; abort deletes them.
Nothing can abort after SIGKILL or a power cut: give buckets a lifecycle rule
(``AbortIncompleteMultipartUpload``) for that case.

**Signals.** Ctrl-C raises ``KeyboardInterrupt`` in the main thread; the ``with`` blocks and conveniences
here abort their upload on the way out. A program that handles SIGINT / SIGTERM in a watcher thread and ends
with ``os._exit`` (the envelope CLI does) must call :func:`abort_all_uploads` first, from that thread: it
aborts every upload of this process that is not committed, waits (bounded) for parts in flight and aborts
again (S3 may keep a part whose upload was in flight during the first abort), and refuses new uploads from
then on. Other threads still writing get a :class:`~envelope.errors.StorageError` with code ``Aborted``, only
once the abort finished; while :func:`uploads_stopped` is true, an error boundary should let the watcher end
the process (and report the signal) rather than report that error. Every method of :class:`S3Writer` may be
called from any thread; :meth:`~S3Writer.abort` is idempotent.

**Clients.** Pass ``client=`` (a boto3 S3 client, e.g. one shared by many objects) or nothing: a client is then
made by :func:`new_client`: the standard credential chain (``AWS_PROFILE``, environment, instance role),
region and endpoint from the standard configuration (``AWS_REGION``, ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL``), botocore's ``standard`` retry mode with 5 attempts in all (``AWS_RETRY_MODE`` /
``AWS_MAX_ATTEMPTS`` override), 2 s to connect and :data:`DEFAULT_READ_TIMEOUT` s to read per attempt (an 8
MiB part on a slow link). Only boto3's own API calls are made (no hand-written HTTP or signing).

**Errors.** Every S3 failure is a :class:`~envelope.errors.StorageError` whose one-line message names the
``s3://`` URL and says what happened (no such bucket or object, access denied, throttled after N attempts,
endpoint unreachable, the object exists already, the object changed while being read), with ``location``
and ``code`` (the AWS error code, or ``EndpointUnreachable``, ``ConnectTimeout``, ``ReadTimeout``,
``NoCredentials``, ``Aborted``, ``TooManyParts``, ``MalformedResponse``).

boto3 is imported only when a client is made or a call is made, never by ``import envelope``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from ._aws import (
    ACCESS_DENIED_CODES,
    CREDENTIAL_CODES,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    NOT_FOUND_CODES,
    PRECONDITION_CODES,
    THROTTLING_CODES,
    aws_message,
    error_code,
    safe_endpoint,
    transport_reason,
)
from ._aws import new_client as _new_aws_client
from .errors import StorageError, UsageError

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from ._api import StreamResult
    from ._keyrings.base import Keyring
    from ._materials import MaterialsManager
    from ._suites import AlgorithmSuite, CommitmentPolicy

__all__ = [
    "DEFAULT_PART_SIZE",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_THREADS",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "PARTS_IN_FLIGHT",
    "PART_BUFFERS",
    "S3Object",
    "S3Reader",
    "S3Url",
    "S3Writer",
    "S3Written",
    "abort_all_uploads",
    "decrypt_object",
    "encrypt_object",
    "find_object",
    "is_s3_url",
    "list_objects",
    "new_client",
    "parse_s3_url",
    "uploads_stopped",
]

MIB = 1024 * 1024
#: Part size of multipart uploads unless ``part_size=`` says otherwise.
DEFAULT_PART_SIZE = 8 * MIB
#: S3's minimum for every part but the last (EntityTooSmall at CompleteMultipartUpload otherwise).
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_PARTS = 10_000
#: Parts uploaded at the same time by one writer.
PARTS_IN_FLIGHT = 2
#: Part buffers one writer holds at most (each ``part_size``): as many as parts in flight. When all are
#: uploading, ``write()`` waits for the oldest and refills its buffer, so for the ~10 ms that takes one part
#: uploads, not two. Measured (256 MiB through a local moto_server, 2 cores, interleaved runs): the same MB/s
#: as a third buffer that fills while two upload, and 8 MiB less peak RSS.
PART_BUFFERS = PARTS_IN_FLIGHT
#: Seconds to wait for an answer per attempt (botocore's default): suits an 8 MiB part on a slow link.
DEFAULT_READ_TIMEOUT = 60.0
MAX_KEY_BYTES = 1024
#: The checksum of every part, declared at CreateMultipartUpload (as boto3's upload_file does): S3 then checks
#: each part's CRC32 (botocore computes it) and keeps a composite of them, instead of computing a full-object
#: checksum of its own (CRC64NVME) over the whole object at CompleteMultipartUpload.
_PART_CHECKSUM = "CRC32"
#: Reads copy from the response stream in chunks of at most this size (bounded temporaries).
_CHUNK = 1 * MIB
#: Read-ahead: each GET that continues where the last ended asks for twice as much, up to this.
_MAX_WINDOW = 256 * MIB
#: What the GET that learns an object's size asks for (what read_header reads first).
_FIRST_GET = 4096
#: A forward seek within the open GET shorter than this is read through rather than a new request.
_SKIP_WITHIN = 256 * 1024
#: The first part buffer grows with small outputs up to this, then is allocated whole: growing a large
#: bytearray by realloc holds the old and the new block at once.
_GROW_LIMIT = 256 * 1024
#: Frame-engine worker threads of :func:`encrypt_object` / :func:`decrypt_object` unless ``threads=`` says
#: otherwise: S3 transfers are network-bound, and the engine's threads cost two more 8 MiB batch slots.
#: Measured (256 MiB through a local moto_server, 2 cores): the same MB/s with 0 and 1 threads, ~20 MiB
#: lower peak RSS with 0.
DEFAULT_THREADS = 0


# ---------------------------------------------------------------------------------------------------------
# URLs

_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class S3Url:
    """``s3://BUCKET/KEY``. ``key`` may be empty or end with ``/``: then the URL names a prefix."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def is_prefix(self) -> bool:
        """True for ``s3://bucket``, ``s3://bucket/`` and ``s3://bucket/dir/``: not an object."""
        return self.key == "" or self.key.endswith("/")

    @property
    def prefix(self) -> str:
        """The key as a listing prefix: ``""`` for the whole bucket, else ending with ``/`` (``dir`` -> ``dir/``)."""
        return self.key if self.is_prefix else self.key + "/"

    def child(self, relative: str) -> S3Url:
        """The object ``relative`` below this URL taken as a prefix (``s3://b/out/`` + ``a/x`` -> ``s3://b/out/a/x``)."""
        return S3Url(self.bucket, _check_key(self.prefix + relative, f"{self}{relative}"))


def is_s3_url(text: str) -> bool:
    """True when ``text`` starts with ``s3://`` (in any case): then it is an S3 location, never a file name."""
    return text[:5].lower() == "s3://"


def _check_key(key: str, shown: str) -> str:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise UsageError(f"malformed S3 URL {shown!r}: the key is longer than {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise UsageError(f"malformed S3 URL {shown!r}: the key contains control characters")
    return key


def parse_s3_url(text: str | S3Url) -> S3Url:
    """Parse ``s3://BUCKET/KEY`` (or a prefix: ``s3://BUCKET``, ``s3://BUCKET/``, ``s3://BUCKET/DIR/``).

    The bucket must look like a bucket name (letters, digits, ``.``, ``-``, ``_``; 3 to 255 characters; S3
    itself enforces the stricter current rules); the key is taken literally, at most 1024 bytes of UTF-8,
    without control characters. Anything else is a :class:`~envelope.errors.UsageError`.
    """
    if isinstance(text, S3Url):
        return text
    if not isinstance(text, str) or not is_s3_url(text):
        raise UsageError(f"malformed S3 URL {text!r}: expected s3://BUCKET/KEY")
    rest = text[5:]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UsageError(f"malformed S3 URL {text!r}: no bucket name after s3://")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise UsageError(f"malformed S3 URL {text!r}: {bucket!r} is not a valid bucket name")
    return S3Url(bucket, _check_key(key, text))


def _object_url(url: str | S3Url) -> S3Url:
    parsed = parse_s3_url(url)
    if parsed.is_prefix:
        raise UsageError(f"{parsed} names a prefix (it ends with / or has no key), not an object")
    return parsed


# ---------------------------------------------------------------------------------------------------------
# clients and errors


def new_client(region: str | None = None, *, session: Any = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
               read_timeout: float = DEFAULT_READ_TIMEOUT) -> Any:
    """A boto3 S3 client with envelope's retry and timeout defaults (see the module docstring).

    ``region`` None: the standard configuration's. ``session``: a ``boto3.session.Session``. Share one client
    between many objects (the writer's upload threads and every reader may use it at once).
    """
    return _new_aws_client("s3", region, session=session, connect_timeout=connect_timeout,
                           read_timeout=read_timeout, max_pool_connections=max(10, 2 * PARTS_IN_FLIGHT + 2))


def _attempts(response: Mapping[str, Any]) -> str:
    retries = (response.get("ResponseMetadata") or {}).get("RetryAttempts")
    if not isinstance(retries, int):
        return ""
    return f" after {retries + 1} attempt" + ("s" if retries else "")


def _error(exc: BaseException, client: Any, operation: str, url: S3Url | str, *, action: str,
           writing: bool = False) -> StorageError:
    """One line naming ``url``: what S3 (or the connection to it) said. Never the request's parameters."""
    from botocore import exceptions as bx

    where = f"cannot {action} {url}"
    if isinstance(exc, bx.ClientError):
        response = getattr(exc, "response", None) or {}
        error = response.get("Error") or {}
        code = error_code(exc)
        detail = aws_message(error)
        if code == "NoSuchBucket":
            reason = "the bucket does not exist"
        elif code == "NoSuchUpload":
            reason = "the multipart upload no longer exists (aborted, or completed by someone else)"
        elif code in ("404", "NotFound"):  # HEAD answers carry no body: a missing key or a missing bucket
            reason = "no such object (or no such bucket)"
        elif code in NOT_FOUND_CODES:
            reason = "no such object"
        elif code in ACCESS_DENIED_CODES:
            reason = f"access denied to {operation} (check the bucket policy and the IAM permissions){detail}"
        elif code in THROTTLING_CODES or code == "503":
            reason = f"S3 throttled {operation}{_attempts(response)}; retry later or raise AWS_MAX_ATTEMPTS"
        elif code in PRECONDITION_CODES:
            reason = ("the object exists already (pass force=True, or --force, to replace it)" if writing
                      else "the object changed while it was being read")
        elif code == "ConditionalRequestConflict":
            reason = "another upload to the same key is completing at the same time"
        elif code in CREDENTIAL_CODES:
            reason = f"AWS rejected the credentials ({code}){detail}"
        elif code == "EntityTooSmall":
            reason = "S3 refused a part smaller than its minimum part size (EntityTooSmall)"
        elif code == "InvalidBucketName":
            reason = "S3 says the bucket name is not valid"
        else:
            reason = f"S3 refused {operation}{_attempts(response)} ({code}){detail}"
        return StorageError(f"{where}: {reason}", location=str(url), code=code)
    if isinstance(exc, bx.BotoCoreError):
        found = transport_reason(exc, client)
        if found is None:
            return StorageError(f"{where}: {operation} failed ({type(exc).__name__})", location=str(url),
                                code=type(exc).__name__)
        reason, code = found
        if code != "NoCredentials":
            reason = f"could not reach S3 at {safe_endpoint(client, 'the S3 endpoint')}: {reason}"
        return StorageError(f"{where}: {reason}", location=str(url), code=code)
    return StorageError(f"{where}: {operation} failed ({type(exc).__name__})", location=str(url),
                        code=type(exc).__name__)


def _call(client: Any, method: str, operation: str, url: S3Url, action: str, writing: bool = False,
          **params: Any) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = getattr(client, method)(**params)
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc, client, operation, url, action=action, writing=writing) from exc
    if not isinstance(response, dict):
        raise StorageError(f"cannot {action} {url}: S3 gave a malformed {operation} answer", location=str(url),
                           code="MalformedResponse")
    return response


def _max_attempts(client: Any) -> int:
    retries = getattr(getattr(getattr(client, "meta", None), "config", None), "retries", None) or {}
    attempts = retries.get("total_max_attempts")
    return int(attempts) if isinstance(attempts, int) and attempts > 0 else DEFAULT_MAX_ATTEMPTS


# ---------------------------------------------------------------------------------------------------------
# reading


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def _seek_target(position: int, size: int, offset: int, whence: int) -> int:
    """Where ``seek(offset, whence)`` goes from ``position`` in a file of ``size`` bytes, as io's files do."""
    if whence == io.SEEK_SET:
        target = offset
    elif whence == io.SEEK_CUR:
        target = position + offset
    elif whence == io.SEEK_END:
        target = size + offset
    else:
        raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
    if target < 0:
        raise ValueError(f"negative seek position {target}")
    return target


class S3Reader(io.RawIOBase):
    """A seekable, read-only binary file over one S3 object, read with ranged GETs.

    Each GET is streamed straight into the caller's buffers (in chunks of at most 1 MiB), so memory does not
    depend on the object's size. Reads that continue where the last GET ended open the next GET twice as
    large (read-ahead, up to 256 MiB); after a seek the first GET asks for just what was asked for, so
    :func:`envelope.read_header` fetches only the header. :meth:`set_fetch_end` lets a caller that knows how
    far it will read make that one GET of exactly those bytes (:func:`envelope.decrypt_range` does).

    ``size`` comes from the first GET's ``Content-Range`` (asked for before any read, it opens that GET; a
    HEAD only for an empty object, which S3 answers a ranged GET with 416). Every GET
    after the first carries ``If-Match`` with the ETag the first one saw, so an object replaced while it is
    being read fails (:class:`~envelope.errors.StorageError`, "changed while it was being read") instead of
    mixing two objects. A GET that breaks off mid-body (connection reset, read timeout, short body) is resumed
    at the byte it stopped, up to the client's retry attempts.

    ``requests`` counts the GET and HEAD requests made and ``bytes_fetched`` the body bytes S3 was asked
    for (the sum of the GETs' Content-Length), for callers and tests that care what a read cost.
    """

    def __init__(self, url: str | S3Url, *, client: Any = None) -> None:
        super().__init__()
        self.url = _object_url(url)
        self._client = client if client is not None else new_client()
        self._pos = 0
        self._size: int | None = None
        self._etag: str | None = None
        self._body: Any = None
        self._body_pos = 0  # absolute offset of the next byte of the open GET
        self._body_end = 0  # absolute end (exclusive) of the open GET
        self._last_end = -1  # where the previous GET ended: a read from there is sequential
        self._window = 0
        self._fetch_end: int | None = None
        self.requests = 0
        self.bytes_fetched = 0

    def __repr__(self) -> str:
        return f"S3Reader({str(self.url)!r})"

    # -- io.RawIOBase --------------------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        self._pos = _seek_target(self._pos, self.size, offset, whence)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the current position; fewer bytes only at the end of the object."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            if self._size is not None and self._pos >= self._size:
                break
            if self._body is not None and self._body_pos != self._pos:
                gap = self._pos - self._body_pos
                if 0 < gap <= _SKIP_WITHIN and self._pos < self._body_end:
                    self._discard(gap)  # a short forward seek: read through it rather than a new request
                if self._body_pos != self._pos:
                    self._close_body()
            if self._body is None and not self._open(self._pos, len(view) - done):
                break
            got = self._read_body(view[done:])
            done += got
            self._pos += got
        return done

    def readall(self) -> bytes:
        buf = bytearray(max(0, self.size - self._pos))
        got = self.readinto(buf)
        return bytes(memoryview(buf)[:got])

    def close(self) -> None:
        self._close_body()
        super().close()

    # -- public extras -------------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The object's size in bytes. Asked before any read, it opens the GET that the first read will use
        (its Content-Range tells the size); a HEAD only when that cannot (an empty object)."""
        if self._size is None and self._body is None and not self.closed:
            self._get(self._pos, self._pos + _FIRST_GET)
        if self._size is None:
            self._head()
        assert self._size is not None
        return self._size

    @property
    def etag(self) -> str | None:
        """The ETag of the object being read (known after the first request)."""
        return self._etag

    def set_fetch_end(self, end: int | None) -> None:
        """GETs opened from now on stop at absolute offset ``end`` (exclusive), or follow the read-ahead rule
        again when None. A hint only: reads past ``end`` still work, with another GET."""
        if end is not None and end < 0:
            raise ValueError("end must be 0 or more")
        self._fetch_end = end

    # -- internals -----------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed S3Reader")

    def _head(self) -> None:
        params: dict[str, Any] = {"Bucket": self.url.bucket, "Key": self.url.key}
        if self._etag is not None:
            params["IfMatch"] = self._etag
        self.requests += 1
        head = _call(self._client, "head_object", "HeadObject", self.url, "read", **params)
        self._learn(int(head.get("ContentLength") or 0), head.get("ETag"))

    def _learn(self, size: int, etag: Any) -> None:
        if self._size is not None and size != self._size:
            raise StorageError(f"cannot read {self.url}: the object changed while it was being read (its size "
                               f"went from {self._size} to {size} bytes)", location=str(self.url),
                               code="ObjectChanged")
        self._size = size
        if self._etag is None and isinstance(etag, str) and etag:
            self._etag = etag

    def _close_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(Exception):  # closing a response we no longer need must not fail a read
                body.close()

    def _discard(self, n: int) -> None:
        scratch = memoryview(bytearray(min(n, _CHUNK)))
        while n > 0 and self._body is not None:
            n -= self._read_body(scratch[:min(n, len(scratch))])

    def _open(self, start: int, want: int) -> bool:
        """Open a GET at ``start`` sized by the fetch end or the read-ahead rule; False at the end."""
        if self._fetch_end is not None and self._fetch_end > start:
            end = self._fetch_end
        else:
            sequential = start == self._last_end
            self._window = min(_MAX_WINDOW, max(want, 2 * self._window if sequential else want))
            end = start + self._window
        return self._get(start, end)

    def _get(self, start: int, end: int) -> bool:
        """GET bytes ``start`` to ``end - 1`` (clipped to the size when known); False when there are none."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._size is not None:
            end = min(end, self._size)
            if end <= start:
                return False
        params: dict[str, Any] = {"Bucket": self.url.bucket, "Key": self.url.key, "Range": f"bytes={start}-{end - 1}"}
        if self._etag is not None:
            params["IfMatch"] = self._etag
        self.requests += 1
        try:
            response = self._client.get_object(**params)
        except ClientError as exc:
            # a start at or past the end (an empty object too): S3 answers 416 rather than an empty body
            if error_code(exc) == "InvalidRange":
                if self._size is None:
                    self._head()
                if self._size is not None and start >= self._size:
                    return False
            raise _error(exc, self._client, "GetObject", self.url, action="read") from exc
        except BotoCoreError as exc:
            raise _error(exc, self._client, "GetObject", self.url, action="read") from exc
        body = response["Body"]
        length = int(response.get("ContentLength") or 0)
        found = _CONTENT_RANGE.fullmatch(str(response.get("ContentRange") or ""))
        if found is not None:
            first, last, total = (int(g) for g in found.groups())
            if first != start or last - first + 1 != length:
                body.close()
                raise StorageError(f"cannot read {self.url}: S3 answered range {first}-{last} for {start}-{end - 1}",
                                   location=str(self.url), code="MalformedResponse")
            self._learn(total, response.get("ETag"))
        elif start == 0:  # the whole object: a server that ignores Range
            self._learn(length, response.get("ETag"))
        else:
            body.close()
            raise StorageError(f"cannot read {self.url}: S3 ignored the Range of a GET", location=str(self.url),
                               code="MalformedResponse")
        self.bytes_fetched += length
        self._body, self._body_pos, self._body_end = body, start, start + length
        self._last_end = self._body_end
        if not length:
            self._close_body()
        return length > 0

    def _read_body(self, view: memoryview) -> int:
        """Copy from the open GET into ``view``, up to the GET's end; a GET that breaks off is resumed at the
        byte where it stopped, up to the client's retry attempts."""
        from botocore import exceptions as bx

        done = 0
        failures = 0
        while done < len(view) and self._body is not None:
            want = min(len(view) - done, self._body_end - self._body_pos, _CHUNK)
            try:
                got = self._body.readinto(view[done:done + want])
                if not got:  # ended early: botocore checks the length only when a read returns nothing
                    raise bx.IncompleteReadError(actual_bytes=self._body_pos, expected_bytes=self._body_end)
            except (bx.ReadTimeoutError, bx.ResponseStreamingError, bx.IncompleteReadError,
                    bx.ConnectionClosedError, OSError) as exc:
                failures += 1
                start, end = self._body_pos, self._body_end
                self._close_body()
                if failures >= _max_attempts(self._client):
                    raise StorageError(f"cannot read {self.url}: the download broke off {failures} times "
                                       f"({type(exc).__name__})", location=str(self.url),
                                       code="ResponseStreamingError") from exc
                self._get(start, end)
                continue
            done += got
            self._body_pos += got
            if self._body_pos >= self._body_end:
                self._close_body()
        return done


# ---------------------------------------------------------------------------------------------------------
# writing

_LIVE: set[S3Writer] = set()
_LIVE_LOCK = threading.Lock()
_refusing = False

#: PutObject / CreateMultipartUpload arguments a caller may add through ``extra_args=``.
ALLOWED_EXTRA_ARGS = frozenset({
    "ACL", "BucketKeyEnabled", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage",
    "ContentType", "ExpectedBucketOwner", "Expires", "GrantFullControl", "GrantRead", "GrantReadACP",
    "GrantWriteACP", "Metadata", "ObjectLockLegalHoldStatus", "ObjectLockMode", "ObjectLockRetainUntilDate",
    "RequestPayer", "SSEKMSEncryptionContext", "SSEKMSKeyId", "ServerSideEncryption", "StorageClass", "Tagging",
})
#: Of those, the ones every later call of the same upload must repeat.
_REPEATED_ARGS = ("ExpectedBucketOwner", "RequestPayer")


def abort_all_uploads(*, timeout: float = 30.0, refuse_new: bool = True) -> int:
    """Abort every :class:`S3Writer` of this process that has not committed; returns how many were open.

    For signal handling: call it from the thread that handles SIGINT / SIGTERM before the process ends (see
    the module docstring). Waits up to ``timeout`` seconds per writer for a CreateMultipartUpload or parts in
    flight to finish, then aborts (again). With ``refuse_new`` (the default), writers made or uploads started
    afterwards fail with a :class:`~envelope.errors.StorageError` (code ``Aborted``), so nothing new starts
    while the process goes down. Errors are not raised: a writer that could not abort (the network is gone)
    keeps the reason in :attr:`S3Writer.abort_error`.
    """
    global _refusing
    with _LIVE_LOCK:
        if refuse_new:
            _refusing = True
        writers = list(_LIVE)
    for writer in writers:
        try:
            writer.abort(timeout=timeout)
        except StorageError:
            pass
    return len(writers)


def uploads_stopped() -> bool:
    """True once :func:`abort_all_uploads` ran with ``refuse_new``: the process is being stopped."""
    return _refusing


def _register(writer: S3Writer) -> None:
    with _LIVE_LOCK:
        if _refusing:
            raise StorageError(f"cannot write {writer.url}: uploads were stopped (the process is being "
                               "interrupted)", location=str(writer.url), code="Aborted")
        _LIVE.add(writer)


def _unregister(writer: S3Writer) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(writer)


class _PartBody(io.RawIOBase):
    """A part buffer as the seekable file botocore sends a request body from, without copying the buffer.

    Over HTTPS botocore sends UploadPart as an aws-chunked body with a trailing checksum, and a ``bytearray`` body
    is first copied whole into an ``io.BytesIO`` for that: 8 MiB more per part in flight. A file is read in 1 MiB
    chunks instead, and rewound (``seek(0)``) before a retry sends it again. ``read`` returns copies of those
    chunks (a file's ordinary semantics), never a view of the buffer. Measured (256 MiB to a moto_server over
    TLS): peak RSS 90 MiB with this body, 106 MiB with the bytearray, the same MB/s. Over plain HTTP botocore
    hashes and sends a ``bytearray`` as it is (no copy), and the chunked reads of a file cost ~6 MiB of peak RSS
    there, so plain HTTP endpoints keep the bytearray (:attr:`S3Writer._file_body`).
    """

    def __init__(self, buffer: bytearray) -> None:
        super().__init__()
        self._view = memoryview(buffer)
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = _seek_target(self._pos, len(self._view), offset, whence)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        start = min(self._pos, len(self._view))
        end = len(self._view) if size is None or size < 0 else min(len(self._view), start + size)
        self._pos = max(self._pos, end)
        return bytes(self._view[start:end])

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        start = min(self._pos, len(self._view))
        n = min(len(target), len(self._view) - start)
        target[:n] = self._view[start:start + n]
        self._pos = max(self._pos, start + n)
        return n

    def release(self) -> None:
        """Let go of the buffer (it may be resized again), once the request that sent it returned."""
        self._view.release()


@dataclass(frozen=True)
class S3Written:
    """What :meth:`S3Writer.commit` made: the object, its size, ETag, version id (versioned buckets) and the
    number of parts (0: a single PutObject)."""

    url: S3Url
    size: int
    etag: str | None
    version_id: str | None
    parts: int


_OPEN, _COMMITTING, _COMMITTED, _ABORTED = "open", "committing", "committed", "aborted"


class S3Writer:
    """A write-only binary file that becomes one S3 object at :meth:`commit`, and nothing at :meth:`abort`.

    ``write()`` copies into a part buffer of ``part_size`` bytes (default 8 MiB, at least 5 MiB, at most 5
    GiB); when one is full and more arrives, it is uploaded (UploadPart) on a worker thread while writing goes
    on into the next, with at most :data:`PARTS_IN_FLIGHT` parts in flight. Memory: at most
    :data:`PART_BUFFERS` part buffers, reused (``write()`` waits for the oldest upload when all are in use, and a
    buffer is refilled only once its UploadPart, retries included, has returned). ``expected_size`` (if known)
    raises the part size when 10,000 parts would not hold it.

    :meth:`commit` uploads the last part and completes the upload (or, for output that fits in one part, puts
    it in one PutObject): only then does the object exist. Unless ``force``, both are conditional
    (``If-None-Match: *``), and an existing object is also looked for (HEAD) when the writer is made, so that
    a long run does not end in "exists already". A part that fails after botocore's retries, or an error on
    commit, aborts the upload and raises :class:`~envelope.errors.StorageError`.

    As a context manager: leaving the block with an exception aborts; leaving it without one and without
    :meth:`commit` aborts too and raises :class:`~envelope.errors.UsageError` (nothing is written that the
    caller did not commit). ``extra_args``: PutObject / CreateMultipartUpload arguments from
    :data:`ALLOWED_EXTRA_ARGS` (``ServerSideEncryption``, ``SSEKMSKeyId``, ``ContentType``, ``Metadata``, ...).
    """

    def __init__(self, url: str | S3Url, *, client: Any = None, part_size: int = DEFAULT_PART_SIZE,
                 force: bool = False, expected_size: int | None = None,
                 extra_args: Mapping[str, Any] | None = None) -> None:
        self.url = _object_url(url)
        if isinstance(part_size, bool) or not isinstance(part_size, int) or not (
                MIN_PART_SIZE <= part_size <= MAX_PART_SIZE):
            raise UsageError(f"the S3 part size must be between {MIN_PART_SIZE // MIB} MiB and "
                             f"{MAX_PART_SIZE // MIB} MiB, not {part_size!r}")
        if expected_size is not None and expected_size > part_size * MAX_PARTS:
            per_part = -(-expected_size // MAX_PARTS)  # ceiling division
            part_size = min(MAX_PART_SIZE, -(-per_part // MIB) * MIB)  # rounded up to whole MiB
        extra = dict(extra_args or {})
        unknown = sorted(set(extra) - ALLOWED_EXTRA_ARGS)
        if unknown:
            raise UsageError(f"extra_args not supported for S3 uploads: {', '.join(unknown)}")
        self.part_size = part_size
        self.force = force
        self.abort_error: StorageError | None = None
        self._extra = extra
        self._repeat = {k: extra[k] for k in _REPEATED_ARGS if k in extra}
        self._client = client if client is not None else new_client()
        # parts go to botocore as a _PartBody over HTTPS (no whole-part copy), as the bytearray over plain HTTP
        endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", None)
        self._file_body = not (isinstance(endpoint, str) and endpoint.lower().startswith("http://"))
        self._lock = threading.Lock()
        self._state = _OPEN
        self._buffer = bytearray()  # the part being filled; the first one grows, later ones are reused
        self._fill = 0
        self._free: list[bytearray] = []  # whole part buffers whose upload has finished
        self._buffers = 1  # part buffers made so far (the one being filled counts), at most PART_BUFFERS
        self._inflight: deque[tuple[Future[dict[str, Any]], bytearray]] = deque()
        self._parts: list[dict[str, Any]] = []
        self._next_part = 1
        self._upload_id: str | None = None
        self._creating = threading.Event()  # set while CreateMultipartUpload is in flight
        self._created = threading.Event()
        self._abort_done = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._failure: StorageError | None = None
        self.size = 0
        _register(self)
        if not force:
            try:
                self._refuse_existing()
            except BaseException:
                self._set_state(_ABORTED)
                self._abort_done.set()
                _unregister(self)
                raise

    def __repr__(self) -> str:
        return f"S3Writer({str(self.url)!r}, state={self._state!r})"

    # -- file protocol ---------------------------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._state in (_COMMITTED, _ABORTED)

    def flush(self) -> None:
        """Nothing to do: parts go out as they fill, the object appears at :meth:`commit`."""

    def write(self, data: Any) -> int:
        """Append ``data`` (any bytes-like object); returns its length."""
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self._check_writable()
        n, off = len(view), 0
        while off < n:
            if self._fill == self.part_size:
                self._ship()  # a full part and more to come: it is not the last part
            k = min(self.part_size - self._fill, n - off)
            end = self._fill + k
            if end > len(self._buffer) and end > _GROW_LIMIT:  # the first buffer: a whole part from now on
                whole = bytearray(self.part_size)
                whole[:self._fill] = memoryview(self._buffer)[:self._fill]
                self._buffer = whole
            # one slice assignment: it grows a small first buffer, and overwrites in place in whole ones
            self._buffer[self._fill:end] = view[off:off + k]
            self._fill += k
            off += k
        self.size += n
        return n

    def close(self) -> None:
        """Abort unless committed (like leaving the ``with`` block on an error)."""
        if self._state != _COMMITTED:
            self.abort()

    def __enter__(self) -> S3Writer:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            with contextlib.suppress(StorageError):  # kept in abort_error; the error in flight is the one to see
                self.abort()
            return
        if self._state != _COMMITTED:
            self.abort()
            raise UsageError(f"the S3Writer for {self.url} was closed without commit(): nothing was written")

    # -- commit and abort --------------------------------------------------------------------------------

    def commit(self) -> S3Written:
        """Upload what is left and make the object appear; any failure aborts and raises StorageError."""
        self._check_writable()
        with self._lock:
            if self._state != _OPEN:
                raise self._not_open()
            self._state = _COMMITTING
        try:
            if self._upload_id is None:
                written = self._put_single()
            else:
                written = self._complete()
        except BaseException as exc:
            self._fail_and_abort(exc)
            raise
        self._set_state(_COMMITTED)
        self._release()
        return written

    def abort(self, *, timeout: float = 30.0) -> None:
        """Abort the multipart upload (no object, no pending upload). Idempotent; callable from any thread.

        Waits up to ``timeout`` seconds for a CreateMultipartUpload or parts in flight, and aborts again once
        they finished (a part whose upload was in flight during an abort may otherwise be kept by S3). Raises
        :class:`~envelope.errors.StorageError` if S3 could not be told (also kept in :attr:`abort_error`).
        """
        with self._lock:
            if self._state in (_COMMITTED, _ABORTED):
                return
            self._state = _ABORTED
            inflight = [future for future, _ in self._inflight]
            creating = self._creating.is_set()
        try:
            if creating:
                self._created.wait(timeout)
            if self._upload_id is not None:
                self._abort_upload(self._upload_id)
                if inflight:
                    from concurrent.futures import wait

                    wait(inflight, timeout=timeout)
                    self._abort_upload(self._upload_id)
        except StorageError as exc:
            self.abort_error = exc
            raise
        finally:
            self._release()
            self._abort_done.set()

    # -- internals -------------------------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._state = state

    def _not_open(self) -> Exception:
        """The error for using a writer that is no longer open. When another thread is aborting it, that abort
        finishes first (bounded), so that no caller ends the process half-way through it."""
        if self._state == _ABORTED:
            self._abort_done.wait(60)
        if self._failure is not None:
            return self._failure
        if self._state == _COMMITTED:
            return UsageError(f"{self.url} was committed already")
        return StorageError(f"cannot write {self.url}: the upload was aborted", location=str(self.url),
                            code="Aborted")

    def _check_writable(self) -> None:
        if self._state != _OPEN:
            raise self._not_open()

    def _release(self) -> None:
        """Stop the upload threads and leave the registry. The buffers are left alone: another thread may be
        inside write() (abort may come from a signal watcher); they go with the writer."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self._free.clear()
        _unregister(self)

    def _refuse_existing(self) -> None:
        """Fail early when the object exists (the conditional write at the end is the race-free check)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_object(Bucket=self.url.bucket, Key=self.url.key, **self._repeat)
        except ClientError as exc:
            code = error_code(exc)
            if code in NOT_FOUND_CODES or code in ACCESS_DENIED_CODES:  # absent, or we may not look: write decides
                return
            raise _error(exc, self._client, "HeadObject", self.url, action="write", writing=True) from exc
        except BotoCoreError as exc:
            raise _error(exc, self._client, "HeadObject", self.url, action="write", writing=True) from exc
        raise StorageError(f"cannot write {self.url}: the object exists already (pass force=True, or --force, to "
                           "replace it)", location=str(self.url), code="PreconditionFailed")

    def _condition(self) -> dict[str, Any]:
        return {} if self.force else {"IfNoneMatch": "*"}

    def _start_upload(self) -> None:
        with _LIVE_LOCK:
            if _refusing:
                raise StorageError(f"cannot write {self.url}: uploads were stopped (the process is being "
                                   "interrupted)", location=str(self.url), code="Aborted")
        with self._lock:
            if self._state != _OPEN:
                raise self._not_open()
            self._creating.set()
        try:
            response = _call(self._client, "create_multipart_upload", "CreateMultipartUpload", self.url, "write",
                             True, Bucket=self.url.bucket, Key=self.url.key, ChecksumAlgorithm=_PART_CHECKSUM,
                             **self._extra)
            upload_id = response.get("UploadId")
            if not isinstance(upload_id, str) or not upload_id:
                raise StorageError(f"cannot write {self.url}: S3 returned no UploadId", location=str(self.url),
                                   code="MalformedResponse")
            self._upload_id = upload_id
        finally:
            self._created.set()
        with self._lock:
            aborted = self._state == _ABORTED
        if aborted:  # abort() ran while the upload was being created: it may have missed the id
            self._abort_upload(upload_id)
            raise self._not_open()
        from concurrent.futures import ThreadPoolExecutor

        from ._stream import worker_signals

        self._pool = ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="envelope-s3-upload",
                                        initializer=worker_signals)

    def _upload_part(self, number: int, body: bytearray) -> dict[str, Any]:
        part_body: Any = _PartBody(body) if self._file_body else body
        try:
            response = _call(self._client, "upload_part", "UploadPart", self.url, f"upload part {number} of", True,
                             Bucket=self.url.bucket, Key=self.url.key, UploadId=self._upload_id, PartNumber=number,
                             Body=part_body, ChecksumAlgorithm=_PART_CHECKSUM, **self._repeat)
        finally:
            if isinstance(part_body, _PartBody):
                part_body.release()
        etag = response.get("ETag")
        if not isinstance(etag, str) or not etag:
            raise StorageError(f"cannot write {self.url}: S3 returned no ETag for part {number}",
                               location=str(self.url), code="MalformedResponse")
        part = {"PartNumber": number, "ETag": etag}
        for name in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256"):
            if response.get(name):
                part[name] = response[name]
        return part

    def _ship(self, last: bool = False) -> None:
        """Upload the current buffer as the next part, once fewer than PARTS_IN_FLIGHT parts are uploading;
        go on in a free buffer (see :meth:`_next_buffer`)."""
        if self._upload_id is None:
            self._start_upload()
        if self._next_part > MAX_PARTS:
            raise self._fail(StorageError(
                f"cannot write {self.url}: the object needs more than {MAX_PARTS} parts of {self.part_size // MIB} "
                "MiB (use a larger part size)", location=str(self.url), code="TooManyParts"))
        while len(self._inflight) >= PARTS_IN_FLIGHT:  # bounded memory: wait for the oldest part
            self._collect_oldest()
        body = self._buffer
        if last:
            del body[self._fill:]  # the last part is exactly what was written (the buffer is not reused)
        with self._lock:
            if self._state not in (_OPEN, _COMMITTING):
                raise self._not_open()
            assert self._pool is not None
            future = self._pool.submit(self._upload_part, self._next_part, body)
            self._inflight.append((future, body))
        self._next_part += 1
        self._buffer, self._fill = bytearray(), 0  # never the buffer just handed over, even if what follows fails
        if not last:
            self._buffer = self._next_buffer()

    def _next_buffer(self) -> bytearray:
        """A whole part buffer to fill: a free one, a new one while fewer than PART_BUFFERS exist, else the
        buffer of the oldest part once its upload returned (a buffer in flight is never written to: botocore
        may send it again on a retry until UploadPart returns)."""
        if not self._free and self._buffers < PART_BUFFERS:
            self._buffers += 1
            return bytearray(self.part_size)
        while not self._free:
            self._collect_oldest()
        return self._free.pop()

    def _collect_oldest(self) -> None:
        with self._lock:
            if self._state not in (_OPEN, _COMMITTING) or not self._inflight:
                raise self._not_open()
            future, body = self._inflight[0]
        try:
            part = future.result()
        except StorageError as exc:
            raise self._fail(exc) from None
        with self._lock:
            if self._state not in (_OPEN, _COMMITTING):
                raise self._not_open()
            self._inflight.popleft()
            self._parts.append(part)
        self._free.append(body)

    def _fail(self, exc: StorageError) -> StorageError:
        """Remember the first failure, abort, and give back the error to raise (with any abort failure)."""
        if self._failure is None:
            self._failure = exc
        try:
            self.abort()
        except StorageError as abort_exc:
            pending = StorageError(f"{exc}; and the upload could not be aborted, so it is still pending ({abort_exc})",
                                   location=exc.location, code=exc.code)
            self._failure = pending
            return pending
        return self._failure

    def _fail_and_abort(self, exc: BaseException) -> None:
        if isinstance(exc, StorageError):
            self._fail(exc)
            return
        try:
            self.abort()
        except StorageError:
            pass

    def _put_single(self) -> S3Written:
        with _LIVE_LOCK:
            if _refusing:
                raise StorageError(f"cannot write {self.url}: uploads were stopped (the process is being "
                                   "interrupted)", location=str(self.url), code="Aborted")
        body = self._buffer
        del body[self._fill:]  # exactly what was written, without a copy (the buffer is not reused)
        put_body: Any = _PartBody(body) if self._file_body else body
        try:
            response = _call(self._client, "put_object", "PutObject", self.url, "write", True,
                             Bucket=self.url.bucket, Key=self.url.key, Body=put_body, **self._extra,
                             **self._condition())
        finally:
            if isinstance(put_body, _PartBody):
                put_body.release()
        return S3Written(self.url, self.size, response.get("ETag"), response.get("VersionId"), 0)

    def _complete(self) -> S3Written:
        if self._fill:
            self._ship(last=True)
        while self._inflight:
            self._collect_oldest()
        parts = sorted(self._parts, key=lambda p: int(p["PartNumber"]))
        response = _call(self._client, "complete_multipart_upload", "CompleteMultipartUpload", self.url, "write",
                         True, Bucket=self.url.bucket, Key=self.url.key, UploadId=self._upload_id,
                         MultipartUpload={"Parts": parts}, **self._repeat, **self._condition())
        return S3Written(self.url, self.size, response.get("ETag"), response.get("VersionId"), len(parts))

    def _abort_upload(self, upload_id: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.abort_multipart_upload(Bucket=self.url.bucket, Key=self.url.key, UploadId=upload_id,
                                                **self._repeat)
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":  # aborted already (by us a moment ago, or a lifecycle rule)
                return
            raise _error(exc, self._client, "AbortMultipartUpload", self.url, action="abort the upload to",
                         writing=True) from exc
        except BotoCoreError as exc:
            raise _error(exc, self._client, "AbortMultipartUpload", self.url, action="abort the upload to",
                         writing=True) from exc


# ---------------------------------------------------------------------------------------------------------
# listing


@dataclass(frozen=True)
class S3Object:
    """One object found by :func:`list_objects`. ``relative`` is its key below the listed prefix."""

    url: S3Url
    size: int
    relative: str
    etag: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)  # user metadata (find_object only: HEAD has it)

    @property
    def relative_parts(self) -> tuple[str, ...]:
        """``relative`` split at ``/``, for making a local path. Raises :class:`~envelope.errors.UsageError` for
        keys that cannot be one safely: empty, ``.`` or ``..`` components, backslashes, NUL."""
        parts = tuple(self.relative.split("/"))
        for part in parts:
            if part in ("", ".", "..") or "\\" in part or "\x00" in part:
                raise UsageError(f"{self.url} cannot be mapped to a local path safely (its key below the prefix "
                                 f"has a component {part!r})")
        return parts


def find_object(url: str | S3Url, *, client: Any = None) -> S3Object | None:
    """The object at ``url`` (one HEAD: its size, ETag and user metadata; ``relative`` is its key), or None when
    S3 says there is none (HEAD cannot tell a missing key from a missing bucket: both are None). Any other failure
    (access denied, throttled, unreachable) is a :class:`~envelope.errors.StorageError` naming ``url``."""
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = _object_url(url)
    client = client if client is not None else new_client()
    try:
        head = client.head_object(Bucket=parsed.bucket, Key=parsed.key)
    except ClientError as exc:
        if error_code(exc) in NOT_FOUND_CODES:
            return None
        raise _error(exc, client, "HeadObject", parsed, action="read") from exc
    except BotoCoreError as exc:
        raise _error(exc, client, "HeadObject", parsed, action="read") from exc
    return S3Object(parsed, int(head.get("ContentLength") or 0), parsed.key, head.get("ETag"),
                    dict(head.get("Metadata") or {}))


def list_objects(prefix: str | S3Url, *, client: Any = None, page_size: int = 1000) -> Iterator[S3Object]:
    """Every object below ``prefix`` (``s3://bucket/dir/``; ``s3://bucket/dir`` means the same, and
    ``s3://bucket`` the whole bucket), page by page (ListObjectsV2), in S3's key order.

    Keys ending with ``/`` (the "folder" markers consoles create) are skipped. Errors (no such bucket, access
    denied, ...) are :class:`~envelope.errors.StorageError`, raised when the page that fails is reached.
    """
    url = parse_s3_url(prefix)
    key_prefix = url.prefix
    shown = S3Url(url.bucket, key_prefix)
    if not 1 <= page_size <= 1000:
        raise UsageError("page_size must be between 1 and 1000")
    client = client if client is not None else new_client()
    token: str | None = None
    while True:
        params: dict[str, Any] = {"Bucket": url.bucket, "Prefix": key_prefix, "MaxKeys": page_size}
        if token:
            params["ContinuationToken"] = token
        page = _call(client, "list_objects_v2", "ListObjectsV2", shown, "list", **params)
        for item in page.get("Contents") or ():
            key = str(item.get("Key") or "")
            if not key.startswith(key_prefix) or key.endswith("/"):
                continue
            yield S3Object(S3Url(url.bucket, key), int(item.get("Size") or 0), key[len(key_prefix):],
                           item.get("ETag"))
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return


# ---------------------------------------------------------------------------------------------------------
# conveniences: whole messages between files and objects

#: What :func:`encrypt_object` / :func:`decrypt_object` read from and write to.
Source = BinaryIO | S3Reader | str | S3Url
Destination = BinaryIO | S3Writer | str | S3Url


def _open_source(source: Source, client: Any) -> tuple[Any, bool]:
    if isinstance(source, (str, S3Url)):
        return S3Reader(source, client=client), True
    return source, False


def _open_destination(destination: Destination, client: Any, part_size: int, force: bool,
                      expected_size: int | None, extra_args: Mapping[str, Any] | None) -> Any:
    if isinstance(destination, (str, S3Url)):
        return S3Writer(destination, client=client, part_size=part_size, force=force, expected_size=expected_size,
                        extra_args=extra_args)
    return destination


def _local_size(source: Any) -> int | None:
    if isinstance(source, S3Reader):
        return source.size - source.tell()
    try:
        import stat

        st = os.fstat(source.fileno())
        if stat.S_ISREG(st.st_mode):
            return int(st.st_size - source.tell())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        pass
    return None


def _run(source: Source, destination: Destination, client: Any, part_size: int, force: bool,
         extra_args: Mapping[str, Any] | None, size_of: Any, work: Any) -> StreamResult:
    """Open the source and the destination, run ``work(src, dst)``, commit an S3 destination on success and
    abort it on any failure (including KeyboardInterrupt); close what was opened here."""
    if client is None and any(isinstance(x, (str, S3Url)) for x in (source, destination)):
        client = new_client()
    src, opened_src = _open_source(source, client)
    try:
        dst = _open_destination(destination, client, part_size, force, size_of(src), extra_args)
        try:
            result = work(src, dst)
            if isinstance(dst, S3Writer):
                dst.commit()
        except BaseException:
            if isinstance(dst, S3Writer):
                try:
                    dst.abort()
                except StorageError:
                    pass  # kept in dst.abort_error; the original error is the one to report
            raise
    finally:
        if opened_src:
            src.close()
    return result  # type: ignore[no-any-return]


def encrypt_object(
    source: Source,
    destination: Destination,
    *,
    keyring: Keyring | None = None,
    materials_manager: MaterialsManager | None = None,
    context: Mapping[str, str] | None = None,
    algorithm: int | str | AlgorithmSuite | None = None,
    frame_length: int | None = None,
    commitment_policy: CommitmentPolicy | str | None = None,
    max_encrypted_data_keys: int | None = None,
    plaintext_length: int | None = None,
    required_context_keys: Iterable[str] | None = None,
    threads: int | None = DEFAULT_THREADS,
    client: Any = None,
    part_size: int = DEFAULT_PART_SIZE,
    force: bool = False,
    extra_args: Mapping[str, Any] | None = None,
) -> StreamResult:
    """Encrypt ``source`` into ``destination``, either of which may be an S3 object.

    ``source``: a binary file, an :class:`S3Reader`, or an ``s3://`` URL. ``destination``: a binary file, an
    :class:`S3Writer`, or an ``s3://`` URL. An S3 destination is committed after the whole message was
    written and aborted on any failure (a writer passed in is committed or aborted too: one writer, one
    message). The keyword arguments are :func:`envelope.encrypt_stream`'s (``threads`` defaults to
    :data:`DEFAULT_THREADS` here; None: the engine's default), plus ``client`` (shared by the source and
    destination made here), ``part_size``, ``force`` and ``extra_args`` (see :class:`S3Writer`);
    ``required_context_keys`` as for :func:`envelope.encrypt_stream`.
    When ``plaintext_length`` is not given and the source is an S3 object or a regular file, its size is
    used (what the data-key cache counts, and the guard against input that grows meanwhile).
    """
    from ._api import encrypt_stream

    def work(src: Any, dst: Any) -> StreamResult:
        length = plaintext_length if plaintext_length is not None else _local_size(src)
        return encrypt_stream(src, dst, keyring=keyring, materials_manager=materials_manager, context=context,
                              algorithm=algorithm, frame_length=frame_length, commitment_policy=commitment_policy,
                              max_encrypted_data_keys=max_encrypted_data_keys, plaintext_length=length,
                              required_context_keys=required_context_keys, threads=threads)

    def size_of(src: Any) -> int | None:
        size = _local_size(src)
        return None if size is None else size + size // 1000 + 64 * 1024  # frames add ~32 bytes per frame

    return _run(source, destination, client, part_size, force, extra_args, size_of, work)


def decrypt_object(
    source: Source,
    destination: Destination,
    *,
    keyring: Keyring | None = None,
    materials_manager: MaterialsManager | None = None,
    commitment_policy: CommitmentPolicy | str | None = None,
    required_context: Mapping[str, str | None] | None = None,
    unsigned_only: bool = False,
    max_encrypted_data_keys: int | None = None,
    max_frame_length: int | None = None,
    max_header_length: int | None = None,
    reproduced_context: Mapping[str, str] | None = None,
    threads: int | None = DEFAULT_THREADS,
    client: Any = None,
    part_size: int = DEFAULT_PART_SIZE,
    force: bool = False,
    extra_args: Mapping[str, Any] | None = None,
) -> StreamResult:
    """Decrypt one message from ``source`` into ``destination``, either of which may be an S3 object.

    Accepts what :func:`encrypt_object` accepts. An S3 destination is committed only after
    :func:`envelope.decrypt_stream` returned, i.e. after every frame tag and the signature verified: a
    tampered or truncated message leaves no object and no pending upload. ``reproduced_context``: the pairs
    given back for the required context keys (see :func:`envelope.decrypt_stream`). ``max_*`` None: the decrypt
    defaults of :func:`envelope.decrypt_stream`.
    """
    from ._api import (
        DEFAULT_MAX_ENCRYPTED_DATA_KEYS,
        DEFAULT_MAX_FRAME_LENGTH,
        DEFAULT_MAX_HEADER_LENGTH,
        decrypt_stream,
    )

    def work(src: Any, dst: Any) -> StreamResult:
        return decrypt_stream(
            src, dst, keyring=keyring, materials_manager=materials_manager, commitment_policy=commitment_policy,
            required_context=required_context, unsigned_only=unsigned_only,
            max_encrypted_data_keys=(DEFAULT_MAX_ENCRYPTED_DATA_KEYS if max_encrypted_data_keys is None
                                     else max_encrypted_data_keys),
            max_frame_length=DEFAULT_MAX_FRAME_LENGTH if max_frame_length is None else max_frame_length,
            max_header_length=DEFAULT_MAX_HEADER_LENGTH if max_header_length is None else max_header_length,
            reproduced_context=reproduced_context, threads=threads)

    return _run(source, destination, client, part_size, force, extra_args, _local_size, work)
