"""``s3://BUCKET/KEY`` as an INPUT or ``-o``, and ``-r s3://BUCKET/PREFIX/``: the S3 kind of location.

Everything S3 is the library's (``envelope.s3``, docs/s3.md "For the CLI"); this module fits it to the CLI's
location protocol (``envelope.batch.locations``):

- A source is an :class:`envelope.s3.S3Reader` (ranged GETs streamed into the library's buffers; its ``size``
  is the object's, so an object replaced while it is read fails). ``inspect`` fetches only the header, and
  ``decrypt --range`` only the frames that hold the range, because the reader is seekable.
- A sink is an :class:`envelope.s3.S3Writer`: a multipart upload (``--part-size``, default 8 MiB) completed only
  by ``commit()``, which the runner calls after the library returned (on decrypt: every frame and the signature
  verified); any failure aborts it, so no object and no pending upload is left. Without ``--force`` the writes
  are conditional (``If-None-Match: *``) and planning refuses an existing object first (one HEAD per output).
- ``-r`` lists the prefix (paginated ListObjectsV2); each object's key below the prefix becomes its name on the
  output side (a local folder or another prefix), with ``--suffix`` as for files. A key that cannot be mapped
  safely (an empty, ``.`` or ``..`` component) is refused before any work.
- Identities for planning: ``("s3", bucket, key)``, so no output of a run may replace one of its inputs.

Clients: one per process (``envelope.s3.new_client``: the standard credential chain, region and endpoint,
botocore's standard retries), made in the process that uses it, after any fork, so every worker process has
its own connection pool.

Signals: the signal watcher (``envelope_cli.signals``) calls :func:`envelope.s3.abort_all_uploads` before the
process ends. A task whose upload is stopped that way fails with a ``StorageError`` (code ``Aborted``) in the
thread that runs it; :meth:`S3Sink.abort` then waits for the watcher to end the process, so that the run
neither reports a second error nor exits before every upload was aborted.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, cast

from .locations import Entry, Kind, Planned, SinkRules, Walk, register, settings

if TYPE_CHECKING:
    from envelope.s3 import S3Reader, S3Url, S3Writer

__all__ = ["NAME", "S3", "S3Options", "S3Sink", "S3Source", "client"]

NAME = "s3"
#: How long a task whose upload the signal watcher stopped waits for the watcher to end the process (it waits
#: up to 30 s per upload for parts in flight); past this the task reports its error after all.
STOPPING_WAIT = 120.0
#: The environment a client depends on: a new one is made when these change (as tests do between runs).
_CLIENT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION",
               "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_CONFIG_FILE",
               "AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE")
#: The object metadata that holds a run's mark (``SinkRules.mark``: Dask retries): ``x-amz-meta-envelope-run``.
MARK_METADATA = "envelope-run"
#: Keys per ListObjectsV2 page for -r: S3's maximum (the tests lower it to exercise pagination cheaply).
LIST_PAGE_SIZE = 1000
_ACCESS_DENIED = frozenset({"AccessDenied", "403", "Forbidden"})
#: StorageError codes of a conditional write that found the object there (envelope.s3 says PreconditionFailed).
PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})


class S3Options(NamedTuple):
    """The S3 kind's options in :class:`~envelope.batch.locations.Settings` (``--part-size``)."""

    part_size: int | None = None  # None: envelope.s3.DEFAULT_PART_SIZE


_clients: dict[tuple[str, ...], Any] = {}
_clients_lock = threading.Lock()


def client() -> Any:
    """This process's S3 client. Keyed by the process id (a forked worker never uses its parent's: a connection
    pool must not be shared across a fork) and by the AWS settings in the environment."""
    key = (str(os.getpid()), *(os.environ.get(name) or "" for name in _CLIENT_ENV))
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            from envelope.s3 import new_client

            found = _clients[key] = new_client()
    return found


def _usage(message: str) -> Exception:
    from envelope import UsageError

    return UsageError(message)


def _object(location: str, what: str) -> S3Url:
    """The URL of one object; a prefix (``s3://b``, ``s3://b/dir/``) is refused naming ``what`` it is for."""
    from envelope.s3 import parse_s3_url

    url = parse_s3_url(location)
    if url.is_prefix:
        raise _usage(f"{what} {location!r} names an S3 prefix (it ends with / or has no key), where an object is "
                     "expected" + (" (add -r to process the objects below it)" if what == "input" else ""))
    return url


class S3Source:
    """One object, read through an :class:`envelope.s3.S3Reader` (seekable). ``size`` is known once opened."""

    mode = None  # S3 objects have no permission bits: an encrypted local output gets the default mode

    def __init__(self, location: str) -> None:
        self.location = location
        self.url = _object(location, "input")
        self._reader: S3Reader | None = None

    @property
    def size(self) -> int | None:
        return None if self._reader is None else self._reader.size

    def open(self) -> BinaryIO:
        from envelope.s3 import S3Reader

        self._reader = S3Reader(self.url, client=client())
        return cast(BinaryIO, self._reader)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()  # its size stays known


def _expected_size(size: int | None) -> int | None:
    """What the output of an input of ``size`` bytes may come to (the writer raises its part size when 10,000
    parts would not hold it): at most the input when decrypting; the input plus frame overhead (about 32 bytes
    per frame, frames of at least 1 KiB here) and a header when encrypting, a third more in base64."""
    if size is None:
        return None
    run = settings()
    if run.reads_messages:
        return size
    expected = size + size // 32 + 64 * 1024
    return expected * 4 // 3 + 4 if run.base64_output else expected


class S3Sink:
    """One object, written through an :class:`envelope.s3.S3Writer`: it appears at :meth:`commit` only."""

    def __init__(self, location: str, rules: SinkRules) -> None:
        self.location = location
        self.url = _object(location, "output")
        self.rules = rules
        self._writer: S3Writer | None = None

    def open(self) -> BinaryIO:
        from envelope.s3 import DEFAULT_PART_SIZE, S3Writer

        part_size = settings().option(NAME, S3Options()).part_size or DEFAULT_PART_SIZE
        mark = self.rules.mark
        self._writer = S3Writer(self.url, client=client(), part_size=part_size, force=self.rules.force,
                                expected_size=_expected_size(self.rules.expected_size),
                                extra_args=None if mark is None else {"Metadata": {MARK_METADATA: mark}})
        return cast(BinaryIO, self._writer)

    def commit(self) -> None:
        if self._writer is None:
            raise _usage(f"{self.location}: nothing was written")  # the runner always opens before committing
        self._writer.commit()

    def abort(self) -> None:
        from envelope import StorageError
        from envelope.s3 import uploads_stopped

        if uploads_stopped():  # the signal watcher is aborting every upload and will end the process
            threading.Event().wait(STOPPING_WAIT)
        writer = self._writer
        if writer is None:
            return
        try:
            writer.abort()
        except StorageError as exc:
            cause = sys.exc_info()[1]  # abort() runs while the task's own error is being handled
            raise StorageError(f"{exc}, so the upload is still pending" + (f" (after: {cause})" if cause else ""),
                               location=str(self.url), code=exc.code) from None


class S3(Kind):
    """``s3://BUCKET/KEY`` objects and, with ``-r``, ``s3://BUCKET/PREFIX/`` prefixes."""

    name = NAME
    #: The transfer, not the cipher, is the bottleneck, and each engine thread holds one more batch: measured
    #: (300 MB local -> S3 through a local moto_server, 2 cores) 93 MiB peak RSS with 0 threads, 107 MiB with
    #: the default, at the same speed (envelope.s3.DEFAULT_THREADS).
    engine_threads = 0

    def claims(self, location: str) -> bool:
        # is_s3_url's own first test, so that a local path (most locations) never imports anything
        if location[:5].lower() != "s3://":
            return False
        from envelope.s3 import is_s3_url

        return is_s3_url(location)

    def source(self, location: str) -> S3Source:
        return S3Source(location)

    def sink(self, location: str, rules: SinkRules) -> S3Sink:
        return S3Sink(location, rules)

    def expand(self, location: str, walk: Walk) -> tuple[bool, Sequence[Entry]]:
        from envelope import StorageError
        from envelope.s3 import find_object, list_objects, parse_s3_url

        url = parse_s3_url(location)
        if walk.recursive:
            entries = [Entry(str(found.url), _relative(found), found.size)
                       for found in list_objects(url, client=client(), page_size=LIST_PAGE_SIZE)]
            if entries or url.is_prefix:  # s3://b/dir with objects below dir/ is a prefix too
                return True, entries
        url = _object(location, "input")
        found = find_object(url, client=client())
        if found is None:
            raise StorageError(f"cannot read {url}: no such object (or no such bucket)", location=str(url),
                               code="NoSuchKey")
        return False, [Entry(location, self.split(location)[1], found.size)]

    def is_folder(self, location: str) -> bool:
        from envelope.s3 import parse_s3_url

        return parse_s3_url(location).is_prefix

    def check_folder(self, location: str) -> None:
        from envelope.s3 import parse_s3_url

        parse_s3_url(location)  # any s3:// URL can be a prefix: s3://b/out means s3://b/out/

    def plan_output(self, location: str) -> Planned:
        from envelope import StorageError
        from envelope.s3 import find_object

        url = _object(location, "output")
        identity = (NAME, url.bucket, url.key)
        if settings().force:
            return Planned(identity, None, False)  # may be replaced: no need to ask (the identity still counts)
        try:
            exists = find_object(url, client=client()) is not None
        except StorageError as exc:
            if exc.code not in _ACCESS_DENIED:
                raise
            exists = False  # we may not look: the conditional write (If-None-Match) decides
        return Planned(identity, identity if exists else None, exists)

    def holds(self, location: str) -> Hashable | None:
        from envelope.s3 import parse_s3_url

        url = parse_s3_url(location)
        return None if url.is_prefix else (NAME, url.bucket, url.key)

    def exists_error(self, location: str, exc: BaseException) -> bool:
        from envelope import StorageError

        if isinstance(exc, StorageError) and exc.code in PRECONDITION_CODES:  # a read's: the input changed
            return exc.location == str(_object(location, "output"))
        return super().exists_error(location, exc)

    def mark_of(self, location: str) -> str | None:
        from envelope.s3 import find_object

        found = find_object(_object(location, "output"), client=client())
        return None if found is None else found.metadata.get(MARK_METADATA)


def _relative(found: Any) -> str:
    """An object's key below the listed prefix, refused when it cannot name an output safely."""
    from envelope import UsageError

    try:
        found.relative_parts  # noqa: B018 - the check is the property's
    except UsageError:
        raise _usage(f"{found.url}: its key below the prefix has an empty, '.' or '..' component (or a backslash), "
                     "which -r cannot turn into an output name safely") from None
    return str(found.relative)


register(S3())
