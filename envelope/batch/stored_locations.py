"""``ssm:/path/name`` and ``secretsmanager:NAME`` (or their ARNs) as an INPUT or ``-o``: the stored kind.

The storage is the library's (``envelope.aws``, docs/secrets.md "Storage"); this module fits it to the CLI's
location protocol (``envelope.batch.locations``):

- What is read: for ``decrypt`` and ``inspect`` the ESDK message stored there (base64 text in an SSM parameter,
  ``SecretBinary``, or base64 in ``SecretString``); for ``encrypt`` the plaintext value (an SSM ``SecureString``
  read with decryption, or a secret's bytes). A version: ``ssm:/p/name:3`` (or ``:LABEL``), and for every
  ``secretsmanager:`` INPUT of the run ``--version-stage``. A value is read once, while planning (so a missing
  one is refused before any work, exit 4), and kept for its task.
- What is written: ``encrypt -o`` stores the message (base64 in an SSM ``String`` parameter, on ``--ssm-tier``;
  ``SecretBinary``); ``decrypt -o`` stores the plaintext as an SSM ``SecureString`` (encrypted at rest by SSM
  with its default key, ``alias/aws/ssm``) or a ``SecretString`` (``SecretBinary`` when not UTF-8): the service
  encrypts it and only those allowed to read it see it, which is what the plaintext of a secret needs. Writes
  are one API call at ``commit()``, after the library returned (every frame and the signature verified), so a
  value is written whole or not at all. The output is collected in memory and refused, with a message that
  suggests ``s3://``, as soon as it is larger than the service holds (SSM standard 4,096 and advanced 8,192
  characters, Secrets Manager 65,536 bytes): the limits are envelope's check, made before anything is sent.
- ``--force`` replaces an existing parameter (a new version) or secret (a new ``AWSCURRENT``); without it
  planning refuses an existing one (exit 2), and the write itself refuses one created meanwhile, or one that
  planning was not allowed to look at (a write-only role), exit 4: SSM ``PutParameter`` without ``Overwrite``
  and Secrets Manager ``CreateSecret`` fail on an existing name, so the check is race-free.
- ``--encode`` / ``--decode`` do not apply: envelope stores messages as base64 itself.
- Identities for planning: ``("ssm", name)`` / ``("secretsmanager", name)``, the name taken from an ARN too and
  without any version, so a run never writes a new version over a parameter or secret it reads.
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from .locations import Entry, Kind, Planned, SinkRules, Walk, register, settings

if TYPE_CHECKING:
    from envelope.aws import Location

__all__ = ["NAME", "Stored", "StoredOptions", "StoredSink", "StoredSource"]

NAME = "stored"
_ACCESS_DENIED = frozenset({"AccessDeniedException", "AccessDenied", "403"})


class StoredOptions(NamedTuple):
    """The stored kind's options in :class:`~envelope.batch.locations.Settings`."""

    ssm_tier: str = "standard"  # --ssm-tier: what SSM outputs are written on
    version_stage: str | None = None  # --version-stage: what secretsmanager: INPUTs are read at


def _options() -> StoredOptions:
    found: StoredOptions = settings().option(NAME, StoredOptions())
    return found


def _usage(message: str) -> Exception:
    from envelope import UsageError

    return UsageError(message)


def _no_base64(location: str, option: str) -> None:
    raise _usage(f"{location!r}: {option} does not apply to ssm: and secretsmanager: locations (envelope stores "
                 "messages there in base64 itself)")


def _input(location: str) -> Location:
    import envelope.aws as aws

    run = settings()
    if run.reads_messages and run.base64_input:
        _no_base64(location, "--decode")
    loc = aws.parse_location(location)
    stage = _options().version_stage
    if stage is not None and loc.service == "secretsmanager":
        loc = aws.parse_location(loc, version_stage=stage)
    return loc


def _output(location: str) -> Location:
    import envelope.aws as aws

    if not settings().reads_messages and settings().base64_output:
        _no_base64(location, "--encode")
    loc = aws.parse_location(location)
    if loc.selector:
        raise _usage(f"output {location!r} names a version: a version can be read, not written (write to "
                     f"ssm:{loc.name}; a new version is made)")
    return loc


def _identity(loc: Location) -> Hashable:
    """The parameter or secret itself: by name (an ARN's name too), whatever version."""
    return loc.identity


def _read(loc: Location) -> bytes:
    import envelope.aws as aws

    if settings().reads_messages:
        return aws.read_message(loc).data
    return aws.read_value(loc, decrypt=True).data


#: Values read while planning, for their task (popped when it opens them). A worker process started later by
#: fork inherits them; any other process reads again.
_READ: dict[tuple[str, Any], bytes] = {}


class StoredSource:
    """A parameter's or secret's value, read whole (these hold at most 64 KiB)."""

    mode = None

    def __init__(self, location: str) -> None:
        self.location = location
        self.loc = _input(location)
        self._data: bytes | None = None

    @property
    def size(self) -> int | None:
        return None if self._data is None else len(self._data)

    def open(self) -> BinaryIO:
        data = _READ.pop((self.location, settings()), None)
        self._data = _read(self.loc) if data is None else data
        return io.BytesIO(self._data)

    def close(self) -> None:
        """Nothing to release: the value stays in memory until the task ends (its size stays known)."""


class _Collected(io.BytesIO):
    """The output, in memory, refused (StorageError, code TooLarge) as soon as it outgrows ``loc``."""

    def __init__(self, loc: Location, *, tier: str, message: bool) -> None:
        super().__init__()
        self._loc, self._tier, self._message = loc, tier, message

    def write(self, data: Any) -> int:
        import envelope.aws as aws

        size = self.tell() + memoryview(data).nbytes
        if size:
            aws.check_size(self._loc, size, tier=self._tier, message=self._message)
        return super().write(data)


class StoredSink:
    """A parameter or secret, written in one call at :meth:`commit` (see the module docstring)."""

    def __init__(self, location: str, rules: SinkRules) -> None:
        self.location = location
        self.loc = _output(location)
        self.rules = rules
        self.messages = not settings().reads_messages  # encrypt writes messages, decrypt plaintext
        self.tier = _options().ssm_tier
        self._out: _Collected | None = None

    def open(self) -> BinaryIO:
        self._out = _Collected(self.loc, tier=self.tier, message=self.messages)
        return self._out

    def commit(self) -> None:
        import envelope.aws as aws

        if self._out is None:
            raise _usage(f"{self.location}: nothing was written")  # the runner always opens before committing
        data, self._out = self._out.getvalue(), None
        if self.messages:
            aws.write_message(self.loc, data, force=self.rules.force, tier=self.tier)
        else:
            aws.write_value(self.loc, data, force=self.rules.force, tier=self.tier)

    def abort(self) -> None:
        self._out = None  # nothing was sent


class Stored(Kind):
    """``ssm:`` parameters and ``secretsmanager:`` secrets."""

    name = NAME

    def claims(self, location: str) -> bool:
        # is_location's own first test, so that a local path (most locations) never imports anything
        if not location.startswith(("ssm:", "secretsmanager:")):
            return False
        from envelope.aws import is_location

        return is_location(location)

    def source(self, location: str) -> StoredSource:
        return StoredSource(location)

    def sink(self, location: str, rules: SinkRules) -> StoredSink:
        return StoredSink(location, rules)

    def expand(self, location: str, walk: Walk) -> tuple[bool, Sequence[Entry]]:
        loc = _input(location)
        data = _READ[(location, settings())] = _read(loc)
        return False, [Entry(location, self.split(location)[1], len(data))]

    def split(self, location: str) -> tuple[str, str]:
        """``ssm:/app/db:3`` -> (``ssm:/app``, ``db``); ``secretsmanager:db`` -> (``secretsmanager:``, ``db``)."""
        import envelope.aws as aws

        loc = aws.parse_location(location)
        folder, slash, name = loc.name.rpartition("/")
        if slash and not folder and loc.service == "ssm":
            folder = "/"
        return f"{loc.service}:{folder}", name

    def join(self, folder: str, *parts: str) -> str:
        if folder.endswith(":"):  # the top level: secretsmanager: + name
            return folder + "/".join(part for part in parts if part)
        return super().join(folder, *parts)

    def plan_output(self, location: str) -> Planned:
        import envelope.aws as aws
        from envelope import StorageError

        loc = _output(location)
        identity = _identity(loc)
        if settings().force:
            return Planned(identity, None, False)
        try:
            exists = aws.exists(loc)
        except StorageError as exc:
            if exc.code not in _ACCESS_DENIED:
                raise
            exists = False  # we may not look (a write-only role): the write itself refuses an existing one
        return Planned(identity, identity if exists else None, exists)

    def holds(self, location: str) -> Hashable | None:
        import envelope.aws as aws

        return _identity(aws.parse_location(location))


register(Stored())
