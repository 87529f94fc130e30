"""Messages, values and key files kept in SSM Parameter Store and AWS Secrets Manager (public: ``envelope.aws``).

Locations are written as the CLI writes them::

    ssm:/app/prod/db            a parameter (or its ARN: ssm:arn:aws:ssm:REGION:ACCOUNT:parameter/app/prod/db)
    ssm:/app/prod/db:3          version 3 of it; ssm:/app/prod/db:LABEL a labelled version (read only)
    secretsmanager:prod/db      a secret by name or ARN; a version by version_stage= / version_id=

How a message is stored: base64 text (no line breaks) in an SSM ``String`` parameter; raw bytes in a secret's
``SecretBinary`` (a ``SecretString`` holding base64 is read too). Sizes are checked against the services' limits
*before* anything is sent, because these services (and moto, which enforces none of them) are not where a user
should learn them: an SSM parameter value holds 4,096 characters on the standard tier and 8,192 on the
advanced one, so a message of at most 3,072 / 6,144 bytes; a secret holds 65,536 bytes. Larger bundles belong
in S3.

Writes are single API calls, so a parameter or secret is either written whole or not at all. An existing one
is replaced only with ``force`` (SSM ``Overwrite``; Secrets Manager ``PutSecretValue``, which keeps the old
value as ``AWSPREVIOUS``).

Errors are :class:`~envelope.errors.StorageError` with ``location`` (as written above) and ``code``: AWS's code
(``ParameterNotFound``, ``ParameterVersionNotFound``, ``ResourceNotFoundException``, ``AccessDeniedException``,
``ThrottlingException``, ...), ours for transport failures (``EndpointUnreachable``, ``ConnectTimeout``,
``ReadTimeout``, ``NoCredentials``), or one of :data:`TOO_LARGE` and :data:`ALREADY_EXISTS`. Messages never
hold a value. A value that is not base64 is a :class:`~envelope.errors.FormatError` (not a message); bad
locations and tiers are :class:`~envelope.errors.UsageError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ._aws import NOT_FOUND_CODES, cached_client, storage_error
from .errors import FormatError, KeyFileError, StorageError, UsageError

__all__ = [
    "ALREADY_EXISTS",
    "NOT_FOUND",
    "SECRETS_MANAGER_LIMIT",
    "SSM_ADVANCED_LIMIT",
    "SSM_STANDARD_LIMIT",
    "SSM_TIERS",
    "TOO_LARGE",
    "Location",
    "StoredValue",
    "check_size",
    "exists",
    "is_location",
    "load_keyring",
    "max_message_size",
    "parse_location",
    "read_message",
    "read_value",
    "write_message",
    "write_value",
]

SSM_STANDARD_LIMIT = 4096  # characters of a standard-tier parameter value
SSM_ADVANCED_LIMIT = 8192  # ... of an advanced-tier one
SECRETS_MANAGER_LIMIT = 65536  # bytes of SecretBinary or SecretString
#: tier name -> (the API's Tier value, the value limit in characters)
SSM_TIERS: Mapping[str, tuple[str, int]] = {"standard": ("Standard", SSM_STANDARD_LIMIT),
                                            "advanced": ("Advanced", SSM_ADVANCED_LIMIT)}

#: ``StorageError.code`` when a value is over the service's limit (raised before anything is sent).
TOO_LARGE = "TooLarge"
#: ``StorageError.code`` when the parameter or secret exists and ``force`` was not given.
ALREADY_EXISTS = "AlreadyExists"
#: The ``StorageError.code`` values that mean "no such parameter, version or secret".
NOT_FOUND = frozenset({"ParameterNotFound", "ParameterVersionNotFound", "ResourceNotFoundException"})

SSM_SERVICE = "SSM Parameter Store"
SM_SERVICE = "AWS Secrets Manager"
_S3_HINT = "; keep larger bundles in S3 (s3://bucket/key)"

# SSM: letters, digits and _.-/ (a hierarchy); a version selector is digits, a label starts with a non-digit.
_SSM_NAME = r"[A-Za-z0-9_.\-/]{1,2048}"
_SSM_ARN = r"arn:aws[a-z-]*:ssm:([a-z0-9-]+):([0-9]{12}):parameter(/?[A-Za-z0-9_.\-/]+)"
_SSM_SELECTOR = r"[0-9]{1,10}|[A-Za-z_.\-][A-Za-z0-9_.\-]{0,99}"
# Secrets Manager: letters, digits and /_+=.@- (up to 512), or an ARN.
_SM_NAME = r"[A-Za-z0-9/_+=.@\-]{1,512}"
_SM_ARN = r"arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):([0-9]{12}):secret:([A-Za-z0-9/_+=.@\-]+?)(?:-[A-Za-z0-9]{6})?"
_SCHEMES = ("ssm:", "secretsmanager:")


def _match(pattern: str, text: str) -> re.Match[str] | None:
    return re.fullmatch(pattern, text)  # compiled on first use (re caches it), not at import


@dataclass(frozen=True)
class Location:
    """A parameter or secret, parsed from ``ssm:NAME[:VERSION|:LABEL]`` or ``secretsmanager:NAME``.

    ``name`` is the parameter name or ARN, or the secret name or ARN, without any version. ``selector`` (SSM) is
    a version number or label; ``version_stage`` / ``version_id`` (Secrets Manager) pick a version of a secret.
    ``str()`` gives the location as written.
    """

    service: str  # "ssm" or "secretsmanager"
    name: str
    selector: str | None = None
    version_stage: str | None = None
    version_id: str | None = None

    def __str__(self) -> str:
        return f"{self.service}:{self.name}" + (f":{self.selector}" if self.selector else "")

    def describe(self) -> str:
        """``str()`` plus the Secrets Manager version asked for, for messages."""
        if self.version_id:
            return f"{self} (version {self.version_id})"
        if self.version_stage:
            return f"{self} (version stage {self.version_stage})"
        return str(self)

    @property
    def version(self) -> int | None:
        """The SSM version number asked for, if any."""
        return int(self.selector) if self.selector and self.selector.isdigit() else None

    @property
    def region(self) -> str | None:
        """The region an ARN names (None for plain names: the configured region is used)."""
        match = _match(_SSM_ARN if self.service == "ssm" else _SM_ARN, self.name)
        return match.group(1) if match else None

    @property
    def identity(self) -> tuple[str, str]:
        """The parameter or secret itself, whatever version and however named: (service, name), the name of an
        ARN too (a secret ARN without its six-character suffix), a parameter's without its leading "/"."""
        match = _match(_SSM_ARN if self.service == "ssm" else _SM_ARN, self.name)
        name = match.group(3) if match else self.name
        return (self.service, name.lstrip("/") if self.service == "ssm" else name)

    @property
    def ssm_request_name(self) -> str:
        """The ``Name`` for GetParameter(s): the name with its selector."""
        return str(self)[len("ssm:"):]

    @property
    def service_label(self) -> str:
        return SSM_SERVICE if self.service == "ssm" else SM_SERVICE


def is_location(text: str) -> bool:
    """True for ``ssm:...`` and ``secretsmanager:...`` (valid or not: :func:`parse_location` says)."""
    return isinstance(text, str) and text.startswith(_SCHEMES)


def parse_location(text: str | Location, *, version_stage: str | None = None, version_id: str | None = None
                   ) -> Location:
    """Parse ``ssm:...`` / ``secretsmanager:...`` (see the module docstring); UsageError when malformed.

    ``version_stage`` / ``version_id`` pick a version of a secret (Secrets Manager only)."""
    if isinstance(text, Location):
        loc = text
    else:
        if not is_location(text):
            raise UsageError(f"{str(text)[:80]!r} is not a location: use ssm:/NAME or secretsmanager:NAME")
        service, _, rest = text.partition(":")
        if service == "ssm":
            loc = _parse_ssm(rest)
        elif _match(_SM_NAME, rest) or _match(_SM_ARN, rest):
            loc = Location("secretsmanager", rest)
        else:
            raise UsageError(f"secretsmanager:{rest[:80]!r}: a secret name is 1 to 512 letters, digits and "
                             "/_+=.@- (or the secret's ARN)")
    if version_stage is None and version_id is None:
        return loc
    if loc.service == "ssm":
        raise UsageError("a version stage or version id applies to secretsmanager: locations; for SSM write "
                         "ssm:/NAME:VERSION")
    if version_stage is not None and version_id is not None:
        raise UsageError("give a version stage or a version id, not both")
    for what, value in (("version stage", version_stage), ("version id", version_id)):
        if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= 256
                                  or not value.isprintable()):
            raise UsageError(f"the {what} must be 1 to 256 printable characters")
    return replace(loc, version_stage=version_stage, version_id=version_id)


def _parse_ssm(rest: str) -> Location:
    selector = None
    arn = rest.startswith("arn:")
    if arn:
        head, sep, tail = rest.rpartition(":")
        if sep and not _match(_SSM_ARN, rest) and _match(_SSM_ARN, head):
            rest, selector = head, tail
        if not _match(_SSM_ARN, rest):
            raise UsageError(f"ssm:{rest[:80]!r} is not a parameter ARN (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME)")
    else:
        name, sep, tail = rest.partition(":")
        rest, selector = name, (tail if sep else None)
        if not _match(_SSM_NAME, rest):
            raise UsageError(f"ssm:{rest[:80]!r}: a parameter name is letters, digits and _.-/ (ssm:/path/name, "
                             "ssm:/path/name:VERSION)")
    if selector is not None and not _match(_SSM_SELECTOR, selector):
        raise UsageError(f"ssm:{rest}:{selector[:80]!r}: after the name comes a version number or a label")
    return Location("ssm", rest, selector=selector)


# ---------------------------------------------------------------------------------------------------------
# clients


def _client(location: Location, client: Any) -> Any:
    return client if client is not None else cached_client(location.service, location.region)


def _call(location: Location, client: Any, action: str, method: str, **params: Any) -> dict[str, Any]:
    from botocore import exceptions as bx

    try:
        response = getattr(client, method)(**params)
    except (bx.ClientError, bx.BotoCoreError) as exc:
        raise storage_error(exc, client, action=action, location=location.describe(),
                            service=location.service_label) from exc
    if not isinstance(response, dict):
        raise StorageError(f"{location.service_label} gave a malformed answer for {location.describe()}",
                           location=str(location), code="MalformedResponse")
    return response


# ---------------------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class StoredValue:
    """What :func:`read_value` / :func:`read_message` read. ``data`` is never shown by ``repr``.

    ``version``: the SSM version number (as text) or the secret's version id. ``kind``: the SSM parameter type
    (``String``, ``SecureString``, ``StringList``) or ``SecretBinary`` / ``SecretString``.
    """

    location: Location
    data: bytes = field(repr=False)
    version: str | None
    kind: str


def _ssm_value(location: Location, parameter: Mapping[str, Any]) -> StoredValue:
    value = parameter.get("Value")
    if not isinstance(value, str):
        raise StorageError(f"{SSM_SERVICE} gave no value for {location}", location=str(location),
                           code="MalformedResponse")
    version = parameter.get("Version")
    return StoredValue(location, value.encode("utf-8"), None if version is None else str(version),
                       str(parameter.get("Type") or "String"))


def secret_value(location: Location, answer: Mapping[str, Any]) -> StoredValue:
    """A GetSecretValue (or BatchGetSecretValue entry) answer -> StoredValue."""
    binary, text = answer.get("SecretBinary"), answer.get("SecretString")
    version = answer.get("VersionId")
    if isinstance(binary, (bytes, bytearray)):
        return StoredValue(location, bytes(binary), version, "SecretBinary")
    if isinstance(text, str):
        return StoredValue(location, text.encode("utf-8"), version, "SecretString")
    raise StorageError(f"{location.describe()} holds no value", location=str(location), code="MalformedResponse")


def read_value(location: str | Location, *, client: Any = None, decrypt: bool = True) -> StoredValue:
    """Read a parameter or secret as it is stored (UTF-8 bytes of an SSM value; a secret's bytes or text).

    ``decrypt``: SSM ``WithDecryption`` (a ``SecureString``'s plaintext; no effect on ``String``).
    ``client``: a boto3 SSM / Secrets Manager client (default: one per region, made once per process).
    """
    loc = parse_location(location)
    client = _client(loc, client)
    if loc.service == "ssm":
        answer = _call(loc, client, "read", "get_parameter", Name=loc.ssm_request_name, WithDecryption=decrypt)
        return _ssm_value(loc, answer.get("Parameter") or {})
    params: dict[str, Any] = {"SecretId": loc.name}
    if loc.version_id:
        params["VersionId"] = loc.version_id
    if loc.version_stage:
        params["VersionStage"] = loc.version_stage
    return secret_value(loc, _call(loc, client, "read", "get_secret_value", **params))


def message_bytes(value: StoredValue) -> bytes:
    """The ESDK message in a stored value: SecretBinary as is, text as base64 (whitespace ignored)."""
    if value.kind == "SecretBinary":
        return value.data
    text = b"".join(value.data.split())
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError("base64", 0, f"{value.location.describe()} does not hold an ESDK message in base64 "
                                       "(write one with envelope encrypt -o LOCATION)") from None


def read_message(location: str | Location, *, client: Any = None) -> StoredValue:
    """Read the ESDK message stored at ``location``: ``StoredValue.data`` is the message's bytes."""
    value = read_value(location, client=client)
    return StoredValue(value.location, message_bytes(value), value.version, value.kind)


def exists(location: str | Location, *, client: Any = None) -> bool:
    """Whether the parameter or secret exists (its current version; a selector or version is ignored).

    For an early, friendly refusal before work is done; :func:`write_message` checks again, atomically.
    """
    loc = parse_location(location)
    client = _client(loc, client)
    try:
        if loc.service == "ssm":
            _call(loc, client, "read", "get_parameter", Name=loc.name, WithDecryption=False)
        else:
            _call(loc, client, "read", "describe_secret", SecretId=loc.name)
    except StorageError as exc:
        if exc.code in NOT_FOUND_CODES:
            return False
        raise
    return True


# ---------------------------------------------------------------------------------------------------------
# sizes


def _tier(tier: str) -> tuple[str, int]:
    found = SSM_TIERS.get(str(tier).lower()) if isinstance(tier, str) else None
    if found is None:
        raise UsageError(f"SSM tier {tier!r}: use standard (4,096 characters) or advanced (8,192)")
    return found


def max_message_size(location: str | Location, *, tier: str = "standard") -> int:
    """The largest ESDK message, in bytes, that fits at ``location`` (SSM: in base64 on ``tier``)."""
    loc = parse_location(location)
    if loc.service == "ssm":
        return _tier(tier)[1] // 4 * 3
    return SECRETS_MANAGER_LIMIT


def _base64_length(n: int) -> int:
    return (n + 2) // 3 * 4


def check_size(location: str | Location, size: int, *, tier: str = "standard", message: bool = True) -> None:
    """Refuse (StorageError, code :data:`TOO_LARGE`) a value of ``size`` bytes that ``location`` cannot hold.

    ``message``: ``size`` is an ESDK message's (stored as base64 in SSM), else a plaintext value's (stored as
    is). Also refuses an empty value (SSM and Secrets Manager need at least one character).
    """
    loc = parse_location(location)
    where = loc.describe()
    if size < 1:
        raise StorageError(f"{where}: an empty value cannot be stored", location=str(loc), code=TOO_LARGE)
    if loc.service == "ssm":
        tier_name, limit = _tier(tier)
        stored = _base64_length(size) if message else size
        if stored > limit:
            what = f"the message is {size:,} bytes, {stored:,} characters in base64" if message else \
                f"the value is {size:,} bytes"
            advanced = f" (the advanced tier holds {SSM_ADVANCED_LIMIT:,})" if limit < SSM_ADVANCED_LIMIT else ""
            raise StorageError(f"{where}: {what}; an SSM {tier_name.lower()} parameter holds at most {limit:,} "
                               f"characters{advanced}{_S3_HINT}", location=str(loc), code=TOO_LARGE)
    elif size > SECRETS_MANAGER_LIMIT:
        what = "message" if message else "value"
        raise StorageError(f"{where}: the {what} is {size:,} bytes; a secret holds at most {SECRETS_MANAGER_LIMIT:,} "
                           f"bytes{_S3_HINT}", location=str(loc), code=TOO_LARGE)


# ---------------------------------------------------------------------------------------------------------
# writing


def _writable(location: str | Location) -> Location:
    loc = parse_location(location)
    if loc.selector or loc.version_id or loc.version_stage:
        raise UsageError(f"{loc.describe()}: a version can be read, not written (write to {loc.service}:{loc.name}; "
                         "a new version is made)")
    return loc


def _exists_error(loc: Location) -> StorageError:
    return StorageError(f"{loc} already exists (force=True, or --force, replaces it)", location=str(loc),
                        code=ALREADY_EXISTS)


def _put_parameter(loc: Location, client: Any, value: str, *, kind: str, force: bool, tier: str,
                   kms_key_id: str | None) -> str:
    params: dict[str, Any] = {"Name": loc.name, "Value": value, "Type": kind, "Tier": _tier(tier)[0],
                              "Overwrite": bool(force)}
    if kms_key_id is not None:
        params["KeyId"] = kms_key_id
    try:
        answer = _call(loc, client, "write", "put_parameter", **params)
    except StorageError as exc:
        if exc.code == "ParameterAlreadyExists":
            raise _exists_error(loc) from None
        raise
    return str(answer.get("Version", ""))


def _put_secret(loc: Location, client: Any, *, force: bool, kms_key_id: str | None, **value: Any) -> str:
    if not _match(_SM_ARN, loc.name):  # a name: create it; an ARN names a secret that exists
        params: dict[str, Any] = {"Name": loc.name, **value}
        if kms_key_id is not None:
            params["KmsKeyId"] = kms_key_id
        try:
            return str(_call(loc, client, "write", "create_secret", **params).get("VersionId", ""))
        except StorageError as exc:
            if exc.code != "ResourceExistsException":
                raise
    if not force:
        raise _exists_error(loc)
    return str(_call(loc, client, "write", "put_secret_value", SecretId=loc.name, **value).get("VersionId", ""))


def write_message(location: str | Location, message: bytes, *, force: bool = False, tier: str = "standard",
                  client: Any = None) -> str:
    """Store an ESDK message at ``location`` and return the version written (SSM number, or secret version id).

    SSM: base64 in a ``String`` parameter on ``tier`` (``"standard"`` or ``"advanced"``). Secrets Manager:
    ``SecretBinary``. The size is checked first (:func:`check_size`: StorageError code :data:`TOO_LARGE`,
    nothing sent); an existing parameter or secret is replaced only with ``force`` (otherwise StorageError code
    :data:`ALREADY_EXISTS`, nothing changed).
    """
    loc = _writable(location)
    data = bytes(message)
    check_size(loc, len(data), tier=tier, message=True)
    client = _client(loc, client)
    if loc.service == "ssm":
        return _put_parameter(loc, client, base64.b64encode(data).decode("ascii"), kind="String", force=force,
                              tier=tier, kms_key_id=None)
    return _put_secret(loc, client, force=force, kms_key_id=None, SecretBinary=data)


def write_value(location: str | Location, data: bytes, *, force: bool = False, tier: str = "standard",
                kms_key_id: str | None = None, client: Any = None) -> str:
    """Store a plaintext value (a decrypted message, a key file) where only its readers can see it.

    SSM: a ``SecureString`` (encrypted by SSM with ``kms_key_id``, default ``alias/aws/ssm``); the value must be
    UTF-8 text. Secrets Manager: ``SecretString`` when UTF-8 text, else ``SecretBinary`` (``kms_key_id`` is used
    when the secret is created). Size, ``force`` and the errors as for :func:`write_message`.
    """
    loc = _writable(location)
    value = bytes(data)
    check_size(loc, len(value), tier=tier, message=False)
    try:
        text: str | None = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    client = _client(loc, client)
    if loc.service == "ssm":
        if text is None:
            raise UsageError(f"{loc}: an SSM parameter holds text, and this value is not UTF-8 text (use a "
                             "secretsmanager: location, or keep it encrypted)")
        return _put_parameter(loc, client, text, kind="SecureString", force=force, tier=tier, kms_key_id=kms_key_id)
    if text is not None:
        return _put_secret(loc, client, force=force, kms_key_id=kms_key_id, SecretString=text)
    return _put_secret(loc, client, force=force, kms_key_id=kms_key_id, SecretBinary=value)


# ---------------------------------------------------------------------------------------------------------
# key files


def load_keyring(location: str | Location, *, client: Any = None) -> Any:
    """The keyring of a key file (the JSON format of ``envelope keygen``) kept at ``location``.

    SSM: a ``SecureString`` parameter, read with decryption; a ``String`` is refused (KeyFileError), because
    its value is stored unencrypted. Secrets Manager: the key file's text. Not found, access denied, ...:
    StorageError naming the location; a value that is not a key file: KeyFileError (never showing the value).
    """
    from ._keyrings.keyfile import parse_key_file

    value = read_value(location, client=client, decrypt=True)
    if value.location.service == "ssm" and value.kind != "SecureString":
        raise KeyFileError(f"{value.location}: a key file must be kept in a SecureString parameter, and this one "
                           f"is a {value.kind} (its value is stored unencrypted)")
    return parse_key_file(value.data, value.location.describe())
