"""AWS KMS keyrings, wire-compatible with the ESDK's KMS keyrings and ``KMSMasterKey`` (esdk-format.md section 7.4).

One constructor per use case (``ARN`` below stands for ``arn:aws:kms:REGION:ACCOUNT:key/ID``)::

    from envelope import KmsKeyring, KmsDiscoveryKeyring, DiscoveryFilter, MultiKeyring

    # Encrypt under one or more keys, and decrypt with the same keys ("strict"). Any identifier works:
    # key ARN, key id, "alias/NAME", alias ARN, "mrk-..." id. The first key makes the data key
    # (GenerateDataKey), each further key wraps the same data key (Encrypt), each in its own region.
    keyring = KmsKeyring([ARN_IN_US_EAST_1, "alias/app"], region="eu-west-1", grant_tokens=[...])

    # Decrypt whatever the caller's AWS credentials may decrypt ("discovery"); encrypt is refused.
    keyring = KmsDiscoveryKeyring()

    # ... but only keys of these accounts in this partition.
    keyring = KmsDiscoveryKeyring(discovery_filter=DiscoveryFilter("aws", ["123456789012"]))

    # ... Multi-Region-key aware: MRK data keys are decrypted by the replica in this region, and other keys
    # must live in this region (the ESDK's MRK-aware discovery keyring).
    keyring = KmsDiscoveryKeyring(mrk_aware=True, region="eu-west-1")

    # KMS keys mixed with local key files.
    keyring = MultiKeyring(generator=KmsKeyring(ARN), children=[load_keyring("backup.key")])

CLI mapping: ``--key kms:ID`` -> ``KmsKeyring(ID, region=REGION, grant_tokens=TOKENS)`` (one per spec, inside
the multi-keyring with the ``file:`` keys); ``--discovery`` -> ``KmsDiscoveryKeyring(region=REGION,
grant_tokens=TOKENS, discovery_filter=DiscoveryFilter(PARTITION, ACCOUNTS) if ACCOUNTS else None)``. Keyrings
without an injected client pickle (clients are made anew after unpickling), for worker processes.

Wire format: provider id ``aws-kms``, provider info = the key ARN KMS returned (UTF-8), ciphertext =
``CiphertextBlob``. The encryption context goes to KMS (left out when empty, as the ESDK does), and so do grant
tokens.

Strict decrypt tries only EDKs whose ARN matches a configured key, one at a time, and collects the errors. A
configured alias or key id is resolved once to its key ARN (DescribeKey, or the ARN GenerateDataKey/Encrypt
returned) and then matched, so you can decrypt with the identifier you encrypted with. Multi-Region keys
(``mrk-``) match their replicas in other regions (``mrk_aware=True``, the default for strict keyrings); Decrypt
then goes to the configured key's region. Every Decrypt answer must name the requested key and give a data key
of the suite's length.

Clients: pass ``client=`` (one boto3 KMS client used for every call), or ``client_factory=`` (region -> client),
or nothing: clients are then made lazily, one per region (the key ARN's region, else ``region=``, else the
default region of the standard AWS configuration) by :func:`new_kms_client`. They use the standard credential
chain (``AWS_PROFILE``, environment, instance role, ...) and honour ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_KMS``. Retries: botocore ``standard`` mode with 5 attempts in all, unless ``AWS_RETRY_MODE``
/ ``AWS_MAX_ATTEMPTS`` (or ``retry_mode`` / ``max_attempts`` in the AWS config file) say otherwise. Timeouts:
2 s to connect and 5 s to read per attempt (``connect_timeout=`` / ``read_timeout=``), so an unreachable
endpoint fails in seconds (at most about 5 x 2 s plus sub-second backoff; a refused connection in well under a
second; an endpoint that accepts but never answers after 5 x 5 s), not minutes.

Errors are :class:`~envelope.errors.KmsError` with ``key_id`` (the key ARN, or the identifier and its region
when no ARN is known) and ``code``: the AWS error code (``NotFoundException``, ``AccessDeniedException``,
``InvalidCiphertextException``, ``ThrottlingException``, ...) or one of ours: ``EndpointUnreachable``,
``ConnectTimeout``, ``ReadTimeout``, ``NoCredentials``, ``KeyIdMismatch``, ``WrongKeyLength``,
``MalformedResponse``. The message says what happened: key not found, access denied, wrong encryption context,
"throttled after N attempts", could not reach the endpoint, no credentials. It never holds key material.
An unwrap that fails raises a KmsError whose ``attempts`` list every EDK tried (a plain KeyringError when no
EDK was eligible, e.g. all outside the discovery filter). Bad arguments and AWS configuration problems (no
region, unknown ``AWS_PROFILE``, invalid ``AWS_MAX_ATTEMPTS``) are :class:`~envelope.errors.UsageError`.

boto3 and botocore are imported only when a KMS keyring makes its first client or call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._aws import (
    CREDENTIAL_CODES,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRY_MODE,
    THROTTLING_CODES,
    aws_message,
    client_config,
    new_client,
    new_session,
    safe_endpoint,
    transport_reason,
)
from .._format import EncryptedDataKey
from .._suites import AlgorithmSuite
from ..errors import KeyringError, KmsError, UsageError
from .arn import KmsArn, check_key_identifier, mrk_match, try_parse_arn

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_RETRY_MODE",
    "PROVIDER_ID",
    "ClientFactory",
    "DiscoveryFilter",
    "KmsDiscoveryKeyring",
    "KmsKeyring",
    "kms_client_config",
    "new_kms_client",
]

PROVIDER_ID = "aws-kms"

#: Region -> boto3 KMS client.
ClientFactory = Callable[[str], Any]


# ---------------------------------------------------------------------------------------------------------
# clients (the shared AWS plumbing is envelope/_aws.py)


def kms_client_config(*, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                      read_timeout: float = DEFAULT_READ_TIMEOUT, botocore_session: Any = None) -> Any:
    """The ``botocore.config.Config`` envelope gives its KMS clients (:func:`envelope._aws.client_config`)."""
    return client_config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                         botocore_session=botocore_session)


def new_kms_client(region: str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                   read_timeout: float = DEFAULT_READ_TIMEOUT, session: Any = None) -> Any:
    """A boto3 KMS client for ``region`` with envelope's retry and timeout defaults.

    ``session`` is a ``boto3.session.Session`` (default: a new one, i.e. the standard credential chain and
    ``AWS_PROFILE``). ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_KMS`` are honoured by boto3 itself.
    """
    return new_client("kms", region, session=session, connect_timeout=connect_timeout, read_timeout=read_timeout)


class _Clients:
    """Per-region KMS clients: one injected client, a factory, or made lazily with :func:`new_kms_client`."""

    def __init__(self, client: Any, client_factory: ClientFactory | None, region: str | None,
                 connect_timeout: float, read_timeout: float) -> None:
        if client is not None and client_factory is not None:
            raise UsageError("pass either client= or client_factory=, not both")
        if region is not None and (not isinstance(region, str) or not region.strip()):
            raise UsageError("region must be a non-empty string")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise UsageError("KMS connect and read timeouts must be positive")
        self.client = client
        self.factory = client_factory
        self.region = region
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session: Any = None
        self._by_region: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # picklable (e.g. for worker processes) unless a client was injected; clients are made anew
        if self.client is not None:
            raise TypeError("a KMS keyring with an injected client= cannot be pickled; use client_factory=")
        return {k: v for k, v in self.__dict__.items() if k not in ("_session", "_by_region", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _session=None, _by_region={}, _lock=threading.Lock())

    def _boto3_session(self) -> Any:
        # callers hold self._lock
        if self._session is None:
            self._session = new_session()
        return self._session

    def _session_region(self) -> str | None:
        from botocore.exceptions import BotoCoreError

        with self._lock:
            try:
                region = self._boto3_session().region_name
            except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile that does not exist
                raise UsageError(f"AWS configuration: {exc}") from exc
        return str(region) if region else None

    def default_region(self) -> str:
        if self.region is not None:
            return self.region
        if self.client is not None:
            region = getattr(getattr(self.client, "meta", None), "region_name", None)
        else:
            region = self._session_region()
        if not region:
            raise UsageError("no AWS region: pass region= (CLI --region) or set AWS_REGION / AWS_DEFAULT_REGION")
        return str(region)

    def region_of(self, identifier: str) -> str:
        arn = try_parse_arn(identifier)
        return arn.region if arn is not None else self.default_region()

    def for_region(self, region: str) -> Any:
        if self.client is not None:
            return self.client
        with self._lock:
            client = self._by_region.get(region)
            if client is None:
                if self.factory is not None:
                    client = self.factory(region)
                else:
                    client = _make_client(region, self._boto3_session, self.connect_timeout, self.read_timeout)
                self._by_region[region] = client
            return client


def _make_client(region: str, session: Callable[[], Any], connect_timeout: float, read_timeout: float) -> Any:
    return new_kms_client(region, connect_timeout=connect_timeout, read_timeout=read_timeout, session=session())


# ---------------------------------------------------------------------------------------------------------
# calls and their errors

_local = threading.local()


def _count_attempt(**_: Any) -> None:
    _local.attempts = getattr(_local, "attempts", 0) + 1


def _watch_attempts(client: Any) -> None:
    """Count HTTP attempts per call (before-send fires once per attempt), for "after N attempts" messages."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is not None:
        events.register("before-send.kms", _count_attempt, unique_id="envelope-kms-attempt-counter")


def _call(client: Any, operation: str, key: str, params: dict[str, Any]) -> dict[str, Any]:
    """Call KMS ``operation``; any failure becomes a KmsError naming ``key`` (never the parameters)."""
    from botocore import exceptions as bx

    method = {"GenerateDataKey": "generate_data_key", "Encrypt": "encrypt", "Decrypt": "decrypt",
              "DescribeKey": "describe_key"}[operation]
    _watch_attempts(client)
    _local.attempts = 0
    try:
        response = getattr(client, method)(**params)
    except bx.ClientError as exc:
        raise _client_error(exc, client, operation, key) from exc
    except bx.BotoCoreError as exc:
        raise _transport_error(exc, client, operation, key) from exc
    if not isinstance(response, dict):
        raise KmsError(f"AWS KMS gave a malformed {operation} answer for {key}", key_id=key, code="MalformedResponse")
    return response


def _attempts(response: Mapping[str, Any] | None) -> int | None:
    counted = getattr(_local, "attempts", 0)
    if counted:
        return int(counted)
    retries = ((response or {}).get("ResponseMetadata") or {}).get("RetryAttempts")
    return int(retries) + 1 if isinstance(retries, int) else None


def _after(attempts: int | None) -> str:
    if attempts is None:
        return ""
    return f" after {attempts} attempt" + ("s" if attempts != 1 else "")


def _client_error(exc: Any, client: Any, operation: str, key: str) -> KmsError:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    code = str(error.get("Code") or "Unknown")
    detail = aws_message(error)
    after = _after(_attempts(response))
    if code in THROTTLING_CODES:
        quota = " (retry quota exhausted)" if (response.get("ResponseMetadata") or {}).get("RetryQuotaReached") else ""
        message = (f"AWS KMS {operation} for {key} throttled{after or ' (attempts unknown)'}{quota}; retry later, "
                   f"raise AWS_MAX_ATTEMPTS, or cache data keys")
    elif code == "NotFoundException":
        message = f"AWS KMS key {key} not found (check the key id or alias, the account and the region){detail}"
    elif code == "AccessDeniedException":
        message = (f"access denied: AWS KMS refused {operation} with key {key} (check the key policy, IAM "
                   f"permissions and grant tokens){detail}")
    elif code == "InvalidCiphertextException":
        message = (f"AWS KMS could not decrypt the data key with {key}: the encryption context differs from the "
                   f"one used to encrypt, or the encrypted data key was changed (InvalidCiphertextException)")
    elif code == "IncorrectKeyException":
        message = f"AWS KMS says the data key was not encrypted under {key} (IncorrectKeyException)"
    elif code == "DisabledException":
        message = f"AWS KMS key {key} is disabled{detail}"
    elif code == "KMSInvalidStateException":
        message = f"AWS KMS key {key} is not usable in its current state (pending deletion?){detail}"
    elif code == "InvalidKeyUsageException":
        message = f"AWS KMS key {key} cannot be used for {operation} (not a symmetric encryption key){detail}"
    elif code in CREDENTIAL_CODES:
        message = f"AWS rejected the credentials for KMS {operation} with key {key} ({code}){detail}"
    else:
        message = f"AWS KMS refused {operation} with key {key}{after} ({code}){detail}"
    return KmsError(message, key_id=key, code=code)


def _transport_error(exc: Any, client: Any, operation: str, key: str) -> KmsError:
    found = transport_reason(exc, client)
    if found is None:
        # str(exc) may hold request parameters (ParamValidationError shows values): name the type only.
        return KmsError(f"AWS KMS {operation} with key {key} failed: {type(exc).__name__}",
                        key_id=key, code=type(exc).__name__)
    reason, code = found
    if code == "NoCredentials":
        return KmsError(f"{reason} for KMS {operation} with key {key}", key_id=key, code=code)
    endpoint = safe_endpoint(client, "the AWS KMS endpoint")
    return KmsError(f"could not reach AWS KMS at {endpoint} for {operation} with key {key}{_after(_attempts(None))}: "
                    f"{reason}", key_id=key, code=code)


def _blob(response: Mapping[str, Any], field: str, operation: str, key: str) -> bytes:
    value = response.get(field)
    if not isinstance(value, (bytes, bytearray)):
        raise KmsError(f"AWS KMS {operation} for {key} returned no {field}", key_id=key, code="MalformedResponse")
    return bytes(value)


def _data_key(suite: AlgorithmSuite, response: Mapping[str, Any], operation: str, key: str) -> bytes:
    """The plaintext data key of a GenerateDataKey or Decrypt answer, checked against the suite (section 7.4)."""
    data_key = _blob(response, "Plaintext", operation, key)
    problem = suite.data_key_error(data_key)
    if problem is not None:
        raise KmsError(f"AWS KMS {operation} with {key} returned {problem}", key_id=key, code="WrongKeyLength")
    return data_key


def _response_arn(response: Mapping[str, Any], operation: str, key: str) -> KmsArn:
    value = response.get("KeyId")
    arn = try_parse_arn(value) if isinstance(value, str) else None
    if arn is None or not arn.is_key:
        raise KmsError(f"AWS KMS {operation} for {key} did not return a key ARN", key_id=key,
                       code="MalformedResponse")
    return arn


def _params(context: Mapping[str, str], grant_tokens: Sequence[str], **params: Any) -> dict[str, Any]:
    # The ESDK leaves out an empty context and empty grant tokens; KMS treats both the same (section 7.4).
    if context:
        params["EncryptionContext"] = dict(context)
    if grant_tokens:
        params["GrantTokens"] = list(grant_tokens)
    return params


def _kms_edks(edks: Sequence[EncryptedDataKey]) -> list[tuple[EncryptedDataKey, KmsArn]]:
    """The ``aws-kms`` EDKs with their ARNs. One whose provider info is not a key ARN fails the call (7.4)."""
    found = []
    for edk in edks:
        if edk.provider_id != PROVIDER_ID:
            continue
        try:
            arn = try_parse_arn(edk.provider_info.decode("utf-8"))
        except UnicodeDecodeError:
            arn = None
        if arn is None or not arn.is_key:
            raise KeyringError(f"an {PROVIDER_ID} encrypted data key has provider info that is not a KMS key ARN "
                               f"({edk.provider_info[:80].hex()})")
        found.append((edk, arn))
    return found


def _grant_tokens(grant_tokens: Iterable[str]) -> tuple[str, ...]:
    if isinstance(grant_tokens, str):
        raise UsageError("grant_tokens must be a list of strings, not one string")
    tokens = tuple(grant_tokens)
    if any(not isinstance(t, str) or not t for t in tokens):
        raise UsageError("grant tokens must be non-empty strings")
    return tokens


def _failed(keyring: object, failures: list[KmsError], skipped: list[str]) -> KeyringError:
    """The unwrap error: a KmsError when KMS was asked and refused, else a plain KeyringError."""
    attempts = [str(f) for f in failures] + skipped
    if not failures:
        return KeyringError(f"{keyring} could not open the data key", attempts)
    error = KmsError(f"{keyring} could not open the data key: " + "; ".join(attempts),
                     key_id=failures[0].key_id, code=failures[0].code,
                     unauthenticated=any(f.unauthenticated for f in failures))
    error.attempts = attempts
    return error


class _KmsBase:
    def __init__(self, *, grant_tokens: Iterable[str], region: str | None, client: Any,
                 client_factory: ClientFactory | None, connect_timeout: float, read_timeout: float) -> None:
        self.grant_tokens = _grant_tokens(grant_tokens)
        self._clients = _Clients(client, client_factory, region, connect_timeout, read_timeout)

    @property
    def region(self) -> str | None:
        return self._clients.region

    def _decrypt(self, suite: AlgorithmSuite, context: Mapping[str, str], edk: EncryptedDataKey,
                 key_arn: str) -> bytes:
        """Decrypt with ``KeyId`` = ``key_arn`` in its region; check the answer (section 7.4 table)."""
        client = self._clients.for_region(self._clients.region_of(key_arn))
        response = _call(client, "Decrypt", key_arn,
                         _params(context, self.grant_tokens, KeyId=key_arn, CiphertextBlob=edk.ciphertext))
        if response.get("KeyId") != key_arn:
            raise KmsError(f"AWS KMS answered Decrypt for {key_arn} with another key ({response.get('KeyId')})",
                           key_id=key_arn, code="KeyIdMismatch")
        return _data_key(suite, response, "Decrypt", key_arn)


# ---------------------------------------------------------------------------------------------------------
# strict keyring


class KmsKeyring(_KmsBase):
    """Encrypt under ``key_ids`` (first: GenerateDataKey, others: Encrypt) and decrypt with the same keys.

    ``key_ids``: one identifier or a list (key ARN, key id, ``alias/NAME``, alias ARN, ``mrk-`` id).
    ``region``: where identifiers that are not ARNs live (default: the AWS configuration's region).
    ``mrk_aware``: a configured Multi-Region key also opens data keys wrapped by its replicas (section 7.4).
    """

    def __init__(self, key_ids: str | Sequence[str], *, grant_tokens: Iterable[str] = (), region: str | None = None,
                 client: Any = None, client_factory: ClientFactory | None = None, mrk_aware: bool = True,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, read_timeout: float = DEFAULT_READ_TIMEOUT
                 ) -> None:
        ids = [key_ids] if isinstance(key_ids, str) else list(key_ids)
        if not ids:
            raise UsageError("a KMS keyring needs at least one key identifier")
        self.key_ids = tuple(check_key_identifier(k) for k in ids)
        self.mrk_aware = mrk_aware
        super().__init__(grant_tokens=grant_tokens, region=region, client=client, client_factory=client_factory,
                         connect_timeout=connect_timeout, read_timeout=read_timeout)
        # identifier -> key ARN, for aliases and key ids resolved once (DescribeKey or a wrap answer)
        self._resolved: dict[str, str] = {k: k for k in self.key_ids if (a := try_parse_arn(k)) and a.is_key}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def __repr__(self) -> str:
        return f"KmsKeyring({list(self.key_ids)!r}, region={self.region!r}, mrk_aware={self.mrk_aware!r})"

    def __str__(self) -> str:
        if len(self.key_ids) == 1:
            return f"aws-kms key {self.key_ids[0]}"
        return "aws-kms keys [" + ", ".join(self.key_ids) + "]"

    def _label(self, identifier: str) -> str:
        """The identifier, with its region when it is not an ARN (for messages)."""
        if try_parse_arn(identifier) is not None:
            return identifier
        try:
            return f"{identifier} (region {self._clients.default_region()})"
        except UsageError:
            return identifier

    def wrap(self, suite: AlgorithmSuite, context: Mapping[str, str], data_key: bytes | None = None
             ) -> tuple[bytes, list[EncryptedDataKey]]:
        edks: list[EncryptedDataKey] = []
        for identifier in self.key_ids:
            client = self._clients.for_region(self._clients.region_of(identifier))
            label = self._label(identifier)
            if data_key is None:
                operation = "GenerateDataKey"
                response = _call(client, operation, label, _params(context, self.grant_tokens, KeyId=identifier,
                                                                   NumberOfBytes=suite.key_length))
                data_key = _data_key(suite, response, operation, label)
            else:
                operation = "Encrypt"
                response = _call(client, operation, label,
                                 _params(context, self.grant_tokens, KeyId=identifier, Plaintext=data_key))
            arn = str(_response_arn(response, operation, label))
            blob = _blob(response, "CiphertextBlob", operation, label)
            with self._lock:
                self._resolved.setdefault(identifier, arn)
            edks.append(EncryptedDataKey(PROVIDER_ID, arn.encode("utf-8"), blob))
        assert data_key is not None  # key_ids is never empty
        return data_key, edks

    def _resolve(self, identifier: str) -> str:
        """The key ARN for a configured identifier: alias and key id are resolved once with DescribeKey."""
        with self._lock:
            arn = self._resolved.get(identifier)
        if arn is not None:
            return arn
        label = self._label(identifier)
        client = self._clients.for_region(self._clients.region_of(identifier))
        response = _call(client, "DescribeKey", label, _params({}, self.grant_tokens, KeyId=identifier))
        metadata = response.get("KeyMetadata") or {}
        parsed = try_parse_arn(metadata.get("Arn") or "") if isinstance(metadata, dict) else None
        if parsed is None or not parsed.is_key:
            raise KmsError(f"AWS KMS DescribeKey for {label} did not return a key ARN", key_id=label,
                           code="MalformedResponse")
        with self._lock:
            return self._resolved.setdefault(identifier, str(parsed))

    def unwrap(self, suite: AlgorithmSuite, context: Mapping[str, str], edks: Sequence[EncryptedDataKey]
               ) -> bytes:
        candidates = _kms_edks(edks)
        failures: list[KmsError] = []
        unresolvable: dict[str, KmsError] = {}  # this call only: a throttled DescribeKey may work next time
        matched = False
        for edk, edk_arn in candidates:
            for identifier in self.key_ids:
                if identifier in unresolvable:
                    continue
                try:
                    key_arn = self._resolve(identifier)
                except KmsError as exc:
                    unresolvable[identifier] = exc
                    failures.append(KmsError(f"cannot resolve {exc.key_id} to a key ARN: {exc}",
                                             key_id=exc.key_id, code=exc.code))
                    continue
                if not (key_arn == str(edk_arn) or (self.mrk_aware and mrk_match(key_arn, str(edk_arn)))):
                    continue
                matched = True
                # MRK match: Decrypt goes to the configured key (its region's replica), section 7.4
                try:
                    return self._decrypt(suite, context, edk, key_arn)
                except KmsError as exc:
                    failures.append(exc)
        skipped = []
        if not matched and not unresolvable:  # a key that could not be resolved may well have matched
            present = ", ".join(str(a) for _, a in candidates) or f"none from {PROVIDER_ID}"
            skipped.append(f"no encrypted data key was wrapped by a configured key (the message holds {present})")
        raise _failed(self, failures, skipped)


# ---------------------------------------------------------------------------------------------------------
# discovery keyring


@dataclass(frozen=True, init=False)
class DiscoveryFilter:
    """Limit discovery to key ARNs of one partition (``aws``, ``aws-cn``, ...) and a set of account ids."""

    partition: str
    account_ids: frozenset[str]

    def __init__(self, partition: str, account_ids: Iterable[str]) -> None:
        accounts = [account_ids] if isinstance(account_ids, str) else list(account_ids)
        if not isinstance(partition, str) or not partition or ":" in partition:
            raise UsageError("a discovery filter needs a partition such as 'aws'")
        if not accounts or any(not isinstance(a, str) or not a or ":" in a or not a.strip() == a
                               for a in accounts):
            raise UsageError("a discovery filter needs at least one account id, each a non-empty string")
        object.__setattr__(self, "partition", partition)
        object.__setattr__(self, "account_ids", frozenset(accounts))

    def allows(self, arn: KmsArn) -> bool:
        return arn.partition == self.partition and arn.account in self.account_ids


class KmsDiscoveryKeyring(_KmsBase):
    """Decrypt-only: try every ``aws-kms`` EDK with the key ARN it names (section 7.4, discovery keyring).

    ``discovery_filter`` limits the partition and accounts. ``mrk_aware=True`` needs a region (``region=`` or
    the AWS configuration's): MRK data keys are decrypted by the replica in that region, and other keys must be
    in that region, as in the ESDK's MRK-aware discovery keyring.
    """

    def __init__(self, *, discovery_filter: DiscoveryFilter | None = None, mrk_aware: bool = False,
                 grant_tokens: Iterable[str] = (), region: str | None = None, client: Any = None,
                 client_factory: ClientFactory | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 read_timeout: float = DEFAULT_READ_TIMEOUT) -> None:
        if discovery_filter is not None and not isinstance(discovery_filter, DiscoveryFilter):
            raise UsageError("discovery_filter must be a DiscoveryFilter")
        self.discovery_filter = discovery_filter
        self.mrk_aware = mrk_aware
        super().__init__(grant_tokens=grant_tokens, region=region, client=client, client_factory=client_factory,
                         connect_timeout=connect_timeout, read_timeout=read_timeout)

    def __repr__(self) -> str:
        return (f"KmsDiscoveryKeyring(discovery_filter={self.discovery_filter!r}, mrk_aware={self.mrk_aware!r}, "
                f"region={self.region!r})")

    def __str__(self) -> str:
        text = "aws-kms discovery"
        if self.discovery_filter is not None:
            accounts = ", ".join(sorted(self.discovery_filter.account_ids))
            text += f" (partition {self.discovery_filter.partition}, accounts {accounts})"
        if self.mrk_aware:
            text += f" (MRK-aware in {self.region or 'the default region'})"
        return text

    def wrap(self, suite: AlgorithmSuite, context: Mapping[str, str], data_key: bytes | None = None
             ) -> tuple[bytes, list[EncryptedDataKey]]:
        raise UsageError("a KMS discovery keyring only decrypts: name the KMS keys to encrypt with")

    def unwrap(self, suite: AlgorithmSuite, context: Mapping[str, str], edks: Sequence[EncryptedDataKey]
               ) -> bytes:
        candidates = _kms_edks(edks)
        failures: list[KmsError] = []
        skipped: list[str] = []
        local_region = self._clients.default_region() if self.mrk_aware and candidates else None
        for edk, arn in candidates:
            if self.discovery_filter is not None and not self.discovery_filter.allows(arn):
                skipped.append(f"{arn}: partition {arn.partition} / account {arn.account} is outside the "
                               f"discovery filter")
                continue
            target = arn
            if local_region is not None:
                if arn.is_mrk:
                    target = arn.with_region(local_region)  # the local replica answers (section 7.4)
                elif arn.region != local_region:
                    skipped.append(f"{arn}: not in region {local_region} and not a Multi-Region key")
                    continue
            try:
                return self._decrypt(suite, context, edk, str(target))
            except KmsError as exc:
                failures.append(exc)
        if not candidates:
            skipped.append(f"the message holds no {PROVIDER_ID} encrypted data key")
        raise _failed(self, failures, skipped)
