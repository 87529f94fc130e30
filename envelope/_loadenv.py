"""``envelope.aws.load_env``: decrypt a function's secrets once, at start-up, with a TTL cache and a retry budget.

Sources (each string of ``names``):

    DB_PASSWORD  or  env:DB_PASSWORD   an environment variable holding a base64 ESDK message, or a value made by
                                        the Lambda console's encryption helper (base64 of a raw KMS ciphertext)
    ssm:/app/db[:VERSION|:LABEL]       an SSM parameter holding a base64 ESDK message
    secretsmanager:NAME                a secret holding an ESDK message (SecretBinary, or base64 SecretString)

**Telling the two kinds of environment values apart** is done by parsing, never by the first byte (a real
KMS ciphertext blob starts with 0x01, like an ESDK v1 message): the value is opened as an ESDK message, and
only when its very first fields (version, type, suite id) are not an ESDK header is it a raw KMS ciphertext.
A message that parses that far and fails later (tampered, truncated) is an error, never sent to KMS. Raw KMS
values are decrypted with the KMS keys of ``keyring`` (``KeyId`` = each key of a :class:`KmsKeyring` in turn;
no ``KeyId`` for a discovery keyring); a keyring without KMS keys does not accept them.

**Context.** ``context=None`` (the default) means: for environment variables, ``{"LambdaFunctionName":
AWS_LAMBDA_FUNCTION_NAME}`` when that variable is set (in Lambda), else nothing; for ``ssm:`` and
``secretsmanager:`` values, nothing. An explicit ``context`` applies to every source. ESDK messages must carry
each pair (the message may hold more); raw KMS values are decrypted with exactly that context, as KMS requires.

**The cache** is process-wide (a Lambda execution environment keeps it between invocations). An entry is keyed
by everything that changes the answer: the source and its name, the SSM version/label or the secret's version
stage/id, the ciphertext itself for environment variables, the context and the transform. It is served for
``max_age`` seconds (default 300, as Powertools' parameters utility; 0 turns caching off), measured on a
monotonic clock. ``force_fetch=True`` skips the lookup and refreshes the entries. ``stale_if_error=S`` (default
0, off) serves an expired entry for up to S seconds past its expiry when refreshing it fails for a transient
reason (throttling, a 5xx answer, an unreachable endpoint) even after the retry budget, like HTTP's
``stale-if-error``; the failure is logged (``envelope.aws`` logger, never a value). The cache holds plaintext in
memory; it does not check the keyring again on a hit. :func:`clear_cache` empties it. Thread-safe: two threads
missing the same entry at once may both fetch it, and both get the right answer.

**Fetching** is batched: SSM ``GetParameters`` with up to 10 names per call, Secrets Manager
``BatchGetSecretValue`` with up to 20 secrets (secrets asked for by version go one by one, and so does every
secret when the batch call is denied). Messages that share a data key (``envelope encrypt-env`` encrypts all
its values under one) are opened with one KMS call per call of ``load_env``.

**The retry budget** (:class:`RetryBudget`) sits on top of botocore's own retries (5 attempts in all, standard
mode): with half of all KMS calls throttled, about 1 botocore call in 32 still fails, which at INIT means a
failed cold start. Each fetch and each decryption is tried up to ``attempts`` times when it fails for a
transient reason, sleeping a random time between 0 and ``min(max_delay, base_delay * 2 ** (try - 1))`` ("full
jitter") in between; no new try starts, and no sleep runs, past ``deadline`` seconds after ``load_env`` began
(a call in flight is bounded by botocore's own attempts and timeouts). Other errors are raised at once. The
default deadline, 30 s, is that long because botocore's own back-off after throttling is ``rand(0, 1) * 2 ** i``
seconds: one call that spends its 5 attempts sleeps 7.5 s on average and up to 15 s, so a shorter deadline would
turn a throttling burst that one more try survives into a failed start. Lambda runs an INIT that takes longer
than its 10 s again, within the first invocation's timeout; one that fails, fails that invocation.

Errors: :class:`~envelope.errors.StorageError` (a variable not set, a parameter or secret not found or not
readable; names it, never a value), :class:`~envelope.errors.KmsError` / :class:`~envelope.errors.KeyringError`
(no key could open it), :class:`~envelope.errors.FormatError` / :class:`~envelope.errors.AuthenticationError` /
:class:`~envelope.errors.ContextMismatchError` (not a message, tampered, wrong context),
:class:`~envelope.errors.UsageError` (bad arguments, a value that is not text or not JSON as asked).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._aws import TRANSIENT_CODES, cached_client, storage_error
from ._keyrings.base import Keyring
from ._materials import MaterialsManager

if TYPE_CHECKING:  # the storage module loads with the first ssm: / secretsmanager: source
    from ._stored import Location, StoredValue
from .errors import FormatError, KeyringError, KmsError, StorageError, UsageError

__all__ = ["DEFAULT_MAX_AGE", "ENV_SUITE", "LAMBDA_CONTEXT_KEY", "RetryBudget", "clear_cache", "encrypt_env",
           "load_env"]

DEFAULT_MAX_AGE = 300.0
#: The suite of :func:`encrypt_env`: committing and unsigned (0x0478), the smallest committing message, because
#: a Lambda function's environment holds 4 KB in all.
ENV_SUITE = 0x0478
#: The encryption-context key of the Lambda console's encryption helper.
LAMBDA_CONTEXT_KEY = "LambdaFunctionName"
SSM_BATCH = 10  # GetParameters takes at most 10 names
SECRETS_BATCH = 20  # BatchGetSecretValue takes at most 20 secret ids
#: Header fields whose rejection means "not an ESDK message at all" (esdk-format.md section 1).
_TRANSFORMS = (None, "json", "binary")

log = logging.getLogger("envelope.aws")
T = TypeVar("T")
Transform = Literal["json", "binary"] | None


@dataclass(frozen=True)
class RetryBudget:
    """INIT's own retries, on top of botocore's (module docstring): tries per fetch or decryption, the sleeps
    between them (full jitter, in seconds), and a deadline in seconds from the start of the ``load_env`` call."""

    attempts: int = 4
    base_delay: float = 0.1
    max_delay: float = 2.0
    deadline: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise UsageError("RetryBudget.attempts must be a whole number, at least 1")
        for name in ("base_delay", "max_delay", "deadline"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise UsageError(f"RetryBudget.{name} must be a number of seconds, at least 0")


def _jitter() -> float:
    """A uniform number in [0, 1) (``random`` is not imported for it: start-up time is what INIT pays)."""
    return int.from_bytes(os.urandom(7), "big") / 2**56


#: Seams for tests: the clock the cache and the deadline use, and the sleep between tries.
_clock: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep


class _Budget:
    """One ``load_env`` call's retry state."""

    def __init__(self, budget: RetryBudget) -> None:
        self.budget = budget
        self.started = _clock()
        self.retries = 0

    def run(self, what: Callable[[], T]) -> T:
        budget = self.budget
        attempt = 1
        while True:
            try:
                return what()
            except (StorageError, KmsError) as exc:
                if exc.code not in TRANSIENT_CODES or attempt >= budget.attempts:
                    raise
                delay = _jitter() * min(budget.max_delay, budget.base_delay * 2 ** (attempt - 1))
                if _clock() + delay - self.started > budget.deadline:
                    raise
                _sleep(delay)
                if _clock() - self.started > budget.deadline:  # the sleep (or a slow clock) used it up
                    raise
                attempt += 1
                self.retries += 1


# ---------------------------------------------------------------------------------------------------------
# sources


class _Source:
    """One entry of ``names``: ``label`` as given, ``kind`` "env" / "ssm" / "secretsmanager"."""

    __slots__ = ("kind", "label", "location", "variable")

    def __init__(self, label: str, kind: str, variable: str | None = None, location: Location | None = None
                 ) -> None:
        self.label = label
        self.kind = kind
        self.variable = variable
        self.location = location


def _source(label: str) -> _Source:
    if not isinstance(label, str) or not label:
        raise UsageError("each name is a non-empty string: VARIABLE, env:VARIABLE, ssm:/NAME or secretsmanager:NAME")
    if label.startswith(("ssm:", "secretsmanager:")):
        from ._stored import parse_location

        location = parse_location(label)
        return _Source(label, location.service, location=location)
    variable = label[len("env:"):] if label.startswith("env:") else label
    if not variable or ":" in variable or "=" in variable or "\0" in variable:
        raise UsageError(f"{label[:80]!r} is not a source: use VARIABLE, env:VARIABLE, ssm:/NAME or "
                         "secretsmanager:NAME")
    return _Source(label, "env", variable=variable)


def _sources(names: Iterable[str] | Mapping[str, str]) -> list[tuple[str, _Source]]:
    if isinstance(names, (str, bytes)):
        raise UsageError("names is a list of names (or a mapping of result name -> name), not one string")
    if isinstance(names, Mapping):
        pairs = [(str(key), _source(value)) for key, value in names.items()]
    else:
        pairs = [(label, _source(label)) for label in names]
    return pairs


# ---------------------------------------------------------------------------------------------------------
# the cache


class _Entry:
    __slots__ = ("expires", "plaintext")

    def __init__(self, plaintext: bytes, expires: float) -> None:
        self.plaintext = plaintext
        self.expires = expires


_cache_lock = threading.Lock()
_cache: dict[tuple[Any, ...], _Entry] = {}


def clear_cache() -> None:
    """Forget every value :func:`load_env` cached (and the AWS clients it made)."""
    from ._aws import clear_cached_clients

    with _cache_lock:
        _cache.clear()
    clear_cached_clients()


def _cache_key(source: _Source, context: Mapping[str, str], transform: Transform, ciphertext: str | None
               ) -> tuple[Any, ...]:
    loc = source.location
    where: tuple[Any, ...]
    if loc is not None:
        where = (loc.service, loc.name, loc.selector, loc.version_stage, loc.version_id)
    else:  # the variable's value is the ciphertext: a new value is a new entry (its digest, not the value)
        where = ("env", source.variable, hashlib.sha256((ciphertext or "").encode("utf-8", "surrogatepass")).digest())
    return (*where, tuple(sorted(context.items())), transform)


# ---------------------------------------------------------------------------------------------------------
# fetching


def _fetch_ssm(sources: Sequence[_Source], budget: _Budget) -> dict[_Source, StoredValue | StorageError]:
    """GetParameters, 10 names per call and each name once per call (so answers map back by name)."""
    found: dict[_Source, StoredValue | StorageError] = {}
    by_region: dict[str | None, list[_Source]] = {}
    for source in sources:
        assert source.location is not None
        by_region.setdefault(source.location.region, []).append(source)
    for region, group in by_region.items():
        batches: list[list[_Source]] = []
        for source in group:
            assert source.location is not None
            for batch in batches:
                if len(batch) < SSM_BATCH and all(s.location and s.location.name != source.location.name
                                                  for s in batch):
                    batch.append(source)
                    break
            else:
                batches.append([source])
        for batch in batches:
            found.update(_ssm_batch(batch, region, budget))
    return found


def _ssm_batch(batch: list[_Source], region: str | None, budget: _Budget
               ) -> dict[_Source, StoredValue | StorageError]:
    from botocore import exceptions as bx

    from ._stored import StoredValue

    names = {s.location.ssm_request_name: s for s in batch if s.location}
    client = cached_client("ssm", region)
    where = ", ".join(f"ssm:{n}" for n in names)

    def call() -> dict[str, Any]:
        try:
            return dict(client.get_parameters(Names=list(names), WithDecryption=True))
        except (bx.ClientError, bx.BotoCoreError) as exc:
            raise storage_error(exc, client, action="read", location=where, service="SSM Parameter Store") from exc

    try:
        answer = budget.run(call)
    except StorageError as exc:
        return {s: exc for s in batch}
    found: dict[_Source, StoredValue | StorageError] = {}
    for parameter in answer.get("Parameters") or []:
        for source in batch:
            loc = source.location
            assert loc is not None
            if loc.name in (parameter.get("Name"), parameter.get("ARN")) and source not in found:
                version = parameter.get("Version")
                if loc.version is not None and version != loc.version:
                    continue  # not the version asked for: treated as missing below
                found[source] = StoredValue(loc, str(parameter.get("Value") or "").encode("utf-8"),
                                            None if version is None else str(version), str(parameter.get("Type")))
    for source in batch:
        if source not in found:
            assert source.location is not None
            code = "ParameterVersionNotFound" if source.location.selector else "ParameterNotFound"
            found[source] = StorageError(f"{source.location} not found ({code})", location=str(source.location),
                                         code=code)
    return found


def _fetch_secrets(sources: Sequence[_Source], budget: _Budget) -> dict[_Source, StoredValue | StorageError]:
    """BatchGetSecretValue for current versions (20 per call); GetSecretValue for the rest, or when denied."""
    from ._stored import read_value

    found: dict[_Source, StoredValue | StorageError] = {}
    single: list[_Source] = []
    by_region: dict[str | None, list[_Source]] = {}
    for source in sources:
        loc = source.location
        assert loc is not None
        if loc.version_stage or loc.version_id:
            single.append(source)
        else:
            by_region.setdefault(loc.region, []).append(source)
    for region, group in by_region.items():
        for start in range(0, len(group), SECRETS_BATCH):
            batch = group[start:start + SECRETS_BATCH]
            answers = _secrets_batch(batch, region, budget)
            if answers is None:
                single += batch
            else:
                found.update(answers)
    for source in single:
        loc = source.location
        assert loc is not None
        try:
            found[source] = budget.run(lambda loc=loc: read_value(loc))  # type: ignore[misc]
        except StorageError as exc:
            found[source] = exc
    return found


def _secrets_batch(batch: list[_Source], region: str | None, budget: _Budget
                   ) -> dict[_Source, StoredValue | StorageError] | None:
    """One BatchGetSecretValue; None when the call itself is not allowed (then each is read on its own)."""
    from botocore import exceptions as bx

    from ._stored import secret_value

    client = cached_client("secretsmanager", region)
    ids = list(dict.fromkeys(s.location.name for s in batch if s.location))
    where = ", ".join(f"secretsmanager:{n}" for n in ids)

    def call() -> dict[str, Any]:
        try:
            return dict(client.batch_get_secret_value(SecretIdList=ids))
        except (bx.ClientError, bx.BotoCoreError) as exc:
            raise storage_error(exc, client, action="read", location=where, service="AWS Secrets Manager") from exc

    try:
        answer = budget.run(call)
    except StorageError as exc:
        if exc.code in ("AccessDeniedException", "UnknownOperationException", "InvalidAction"):
            return None
        return {s: exc for s in batch}
    found: dict[_Source, StoredValue | StorageError] = {}
    for value in answer.get("SecretValues") or []:
        for source in batch:
            loc = source.location
            assert loc is not None
            if loc.name in (value.get("Name"), value.get("ARN")):
                try:
                    found[source] = secret_value(loc, value)
                except StorageError as exc:
                    found[source] = exc
    for error in answer.get("Errors") or []:
        for source in batch:
            loc = source.location
            assert loc is not None
            if loc.name == error.get("SecretId") and source not in found:
                code = str(error.get("ErrorCode") or "Unknown")
                text = "not found" if code == "ResourceNotFoundException" else "could not be read"
                found[source] = StorageError(f"{loc} {text} ({code})", location=str(loc), code=code)
    for source in batch:
        if source not in found:
            found[source] = StorageError(f"AWS Secrets Manager gave no value for {source.location}",
                                         location=str(source.location), code="MalformedResponse")
    return found


# ---------------------------------------------------------------------------------------------------------
# decrypting


def _kms_keyrings(keyring: Keyring | None) -> list[Any]:
    """The KMS keyrings inside ``keyring`` (itself, or a multi-keyring's members), in order."""
    kms = sys.modules.get("envelope._keyrings.kms")  # loaded whenever a KMS keyring exists
    if keyring is None or kms is None:
        return []
    if isinstance(keyring, (kms.KmsKeyring, kms.KmsDiscoveryKeyring)):
        return [keyring]
    found: list[Any] = []
    for member in getattr(keyring, "keyrings", None) or []:
        found += _kms_keyrings(member)
    return found


def _raw_kms_decrypt(blob: bytes, context: Mapping[str, str], keyring: Keyring | None, label: str) -> bytes:
    """A Lambda console helper value: a raw KMS ciphertext, opened with the keyring's KMS keys."""
    from ._keyrings import kms
    from ._keyrings.arn import try_parse_arn

    keyrings = _kms_keyrings(keyring)
    if not keyrings:
        raise FormatError("version", 0, f"{label} is not an ESDK message; a raw KMS ciphertext (Lambda console "
                                        "helper) needs a KMS keyring to decrypt it")
    failures: list[KmsError] = []
    for ring in keyrings:
        clients = ring._clients
        targets = list(ring.key_ids) if isinstance(ring, kms.KmsKeyring) else [None]
        for key_id in targets:
            region = clients.region_of(key_id) if key_id else clients.default_region()
            params = kms._params(context, ring.grant_tokens, CiphertextBlob=blob)
            if key_id:
                params["KeyId"] = key_id
            what = key_id or f"discovery (region {region})"
            try:
                response = kms._call(clients.for_region(region), "Decrypt", what, params)
            except KmsError as exc:
                failures.append(exc)
                continue
            arn = try_parse_arn(str(response.get("KeyId") or ""))
            if isinstance(ring, kms.KmsDiscoveryKeyring) and ring.discovery_filter is not None and (
                    arn is None or not ring.discovery_filter.allows(arn)):
                failures.append(KmsError(f"{label}: decrypted by {response.get('KeyId')}, outside the discovery "
                                         "filter", key_id=str(response.get("KeyId")), code="KeyIdMismatch"))
                continue
            return kms._blob(response, "Plaintext", "Decrypt", what)
    first = failures[0]
    hint = ""
    if first.code == "InvalidCiphertextException":
        hint = (f" (for a Lambda console value: is {LAMBDA_CONTEXT_KEY} the function it was encrypted for? "
                "the context given is " + (", ".join(sorted(context)) or "empty") + ")")
    raise KmsError(f"{label}: AWS KMS could not decrypt this raw KMS ciphertext{hint}: "
                   + "; ".join(str(f) for f in failures), key_id=first.key_id, code=first.code,
                   attempts=[str(f) for f in failures])


class _OncePerDataKey:
    """Decryption materials manager for one ``load_env`` call: messages with the same suite, encrypted data keys
    and context share a data key, which the keyring (KMS) is asked to open once."""

    def __init__(self, inner: MaterialsManager) -> None:
        self._inner = inner
        self._opened: dict[tuple[Any, ...], Any] = {}

    def get_encryption_materials(self, request: Any) -> Any:
        raise UsageError("load_env only decrypts")

    def decrypt_materials(self, request: Any) -> Any:
        key = (request.suite.id, tuple(request.encrypted_data_keys), tuple(sorted(request.context.items())))
        found = self._opened.get(key)
        if found is None:
            found = self._opened[key] = self._inner.decrypt_materials(request)
        return found


def _open(source: _Source, data: bytes, context: Mapping[str, str], manager: MaterialsManager,
          keyring: Keyring | None, budget: _Budget) -> bytes:
    from ._api import decrypt

    def esdk() -> bytes:
        return decrypt(data, materials_manager=manager, required_context=context).plaintext

    try:
        return budget.run(esdk)
    except FormatError as exc:
        if source.kind != "env" or not exc.at_start:
            raise FormatError(exc.field, exc.offset, f"{exc.reason} (in {source.label})") from None
    return budget.run(lambda: _raw_kms_decrypt(data, context, keyring, source.label))


def _env_bytes(source: _Source, text: str) -> bytes:
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise FormatError("base64", 0, f"environment variable {source.variable} does not hold base64 (an ESDK "
                                       "message or a Lambda console helper value)") from None


def _transformed(label: str, plaintext: bytes, transform: Transform) -> Any:
    if transform == "binary":
        return plaintext
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{label}: the decrypted value is not UTF-8 text (use transform='binary')") from None
    if transform is None:
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        position = getattr(exc, "pos", None)
        at = f" (at character {position})" if isinstance(position, int) else ""
        raise UsageError(f"{label}: the decrypted value is not JSON{at}") from None


# ---------------------------------------------------------------------------------------------------------
# the call


def load_env(
    names: Iterable[str] | Mapping[str, str],
    *,
    keyring: Keyring | None = None,
    materials_manager: MaterialsManager | None = None,
    context: Mapping[str, str] | None = None,
    transform: Transform = None,
    max_age: float = DEFAULT_MAX_AGE,
    force_fetch: bool = False,
    stale_if_error: float = 0.0,
    retry: RetryBudget | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Decrypt secrets at start-up; returns name -> value (text; with ``transform`` ``"json"`` the parsed JSON,
    ``"binary"`` bytes). See the module docstring for the sources, the context, the cache and the retry budget.

    ``names``: ``["DB_PASSWORD", "ssm:/app/token", ...]`` (answer keys are these strings), or a mapping of
    answer key -> source. ``keyring`` or ``materials_manager``: what opens the messages. ``environ``: where
    variables (and ``AWS_LAMBDA_FUNCTION_NAME``) are read (default ``os.environ``).
    """
    from ._api import _manager

    pairs = _sources(names)
    if transform not in _TRANSFORMS:
        raise UsageError(f"transform must be None, 'json' or 'binary', not {transform!r}")
    for what, value in (("max_age", max_age), ("stale_if_error", stale_if_error)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise UsageError(f"{what} must be a number of seconds, at least 0")
    if context is not None and (not isinstance(context, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in context.items())):
        raise UsageError("context must map strings to strings")
    manager = _manager(keyring, materials_manager)
    env = os.environ if environ is None else environ
    function = env.get("AWS_LAMBDA_FUNCTION_NAME")
    lambda_context = {LAMBDA_CONTEXT_KEY: function} if function else {}
    budget = _Budget(retry or RetryBudget())

    # 1. what each source is, and what the cache already holds
    wanted: list[tuple[str, _Source, dict[str, str], tuple[Any, ...], str | None]] = []
    for answer_key, source in pairs:
        ctx = dict(context) if context is not None else (lambda_context if source.kind == "env" else {})
        ciphertext = None
        if source.kind == "env":
            ciphertext = env.get(source.variable or "")
            if ciphertext is None:
                raise StorageError(f"environment variable {source.variable} is not set", location=source.label,
                                   code="NotFound")
        wanted.append((answer_key, source, ctx, _cache_key(source, ctx, transform, ciphertext), ciphertext))
    now = _clock()
    cached: dict[tuple[Any, ...], _Entry] = {}
    with _cache_lock:
        for *_, key, _ in wanted:
            entry = _cache.get(key)
            if entry is not None:
                cached[key] = entry
    fresh = {key for key, entry in cached.items() if not force_fetch and max_age > 0 and now < entry.expires}

    # 2. fetch what is missing, batched
    remote = [source for _, source, _, key, _ in wanted if key not in fresh and source.kind != "env"]
    fetched: dict[_Source, StoredValue | StorageError] = {}
    fetched.update(_fetch_ssm([s for s in remote if s.kind == "ssm"], budget))
    fetched.update(_fetch_secrets([s for s in remote if s.kind == "secretsmanager"], budget))

    # 3. decrypt, one KMS call per data key for this call
    if materials_manager is None:
        manager = _OncePerDataKey(manager)
    result: dict[str, Any] = {}
    for answer_key, source, ctx, key, ciphertext in wanted:
        if key in fresh:
            result[answer_key] = _transformed(source.label, cached[key].plaintext, transform)
            continue
        try:
            if source.kind == "env":
                data = _env_bytes(source, ciphertext or "")
            else:
                from ._stored import message_bytes

                got = fetched[source]
                if isinstance(got, StorageError):
                    raise got
                data = message_bytes(got)
            plaintext = _open(source, data, ctx, manager, keyring, budget)
        except (StorageError, KmsError, KeyringError) as exc:
            stale = cached.get(key)
            code = getattr(exc, "code", None)
            if stale is None or code not in TRANSIENT_CODES or _clock() > stale.expires + stale_if_error:
                raise
            log.warning("envelope.aws.load_env: serving the cached value of %s past its max_age: refreshing it "
                        "failed (%s)", source.label, code)
            plaintext = stale.plaintext
        else:
            if max_age > 0:
                with _cache_lock:
                    _cache[key] = _Entry(plaintext, _clock() + max_age)
        result[answer_key] = _transformed(source.label, plaintext, transform)
    return result



def encrypt_env(
    values: Mapping[str, str | bytes],
    *,
    keyring: Keyring | None = None,
    materials_manager: MaterialsManager | None = None,
    function: str | None = None,
    context: Mapping[str, str] | None = None,
    algorithm: int | str | None = ENV_SUITE,
    shared_data_key: bool = True,
) -> dict[str, str]:
    """Encrypt environment values for :func:`load_env`: NAME -> base64 ESDK message (one line, no padding lost).

    ``function``: the Lambda function that will read them; adds ``{"LambdaFunctionName": function}`` to the
    context (which :func:`load_env` requires by default in Lambda). ``shared_data_key`` (default): every value
    is encrypted under one data key (one KMS GenerateDataKey; each message still has its own message id and
    derived key), so :func:`load_env` opens them all with one KMS Decrypt. ``algorithm``: default 0x0478.
    """
    from ._api import _manager, encrypt
    from ._bundle import NAME

    if not isinstance(values, Mapping) or not values:
        raise UsageError("encrypt_env needs at least one NAME -> value")
    for name, value in values.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise UsageError(f"{str(name)[:80]!r} is not a valid environment variable name (letters, digits and _, "
                             "not starting with a digit)")
        if not isinstance(value, (str, bytes)):
            raise UsageError(f"the value of {name} must be text or bytes")
    pairs = dict(context or {})
    if function is not None:
        if not isinstance(function, str) or not function:
            raise UsageError("function must be a Lambda function name")
        if pairs.get(LAMBDA_CONTEXT_KEY, function) != function:
            raise UsageError(f"the context already holds {LAMBDA_CONTEXT_KEY} with another value than function")
        pairs[LAMBDA_CONTEXT_KEY] = function
    manager = _manager(keyring, materials_manager)
    if shared_data_key and materials_manager is None and len(values) > 1:
        from ._cache import CachingMaterialsManager, LocalCache

        manager = CachingMaterialsManager(manager, LocalCache(1), max_age=300.0, max_messages=len(values))
    out = {}
    for name, value in values.items():
        data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
        message = encrypt(data, materials_manager=manager, context=pairs, algorithm=algorithm)
        out[name] = base64.b64encode(message).decode("ascii")
    return out
