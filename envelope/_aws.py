"""AWS plumbing shared by every service envelope calls (KMS, S3, SSM, Secrets Manager): sessions, client
configuration, and the vocabulary for describing what went wrong. No service logic lives here.

boto3 and botocore are imported inside the functions, never at module import, so local-key runs never load
them.

Clients use the standard credential chain (``AWS_PROFILE``, environment, instance role, ...) and honour
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``. Retries: botocore ``standard`` mode with
:data:`DEFAULT_MAX_ATTEMPTS` attempts in all, unless ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` (or
``retry_mode`` / ``max_attempts`` in the AWS config file) say otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import UsageError

__all__ = [
    "ACCESS_DENIED_CODES",
    "CREDENTIAL_CODES",
    "CoreSession",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_RETRY_MODE",
    "NOT_FOUND_CODES",
    "SERVER_ERROR_CODES",
    "PRECONDITION_CODES",
    "THROTTLING_CODES",
    "TRANSIENT_CODES",
    "TRANSPORT_CODES",
    "aws_message",
    "cached_client",
    "clear_cached_clients",
    "client_config",
    "error_code",
    "new_client",
    "new_session",
    "safe_endpoint",
    "storage_error",
    "transport_reason",
]

DEFAULT_RETRY_MODE = "standard"
DEFAULT_MAX_ATTEMPTS = 5  # total attempts, the first one included
DEFAULT_CONNECT_TIMEOUT = 2.0  # seconds per attempt; a TCP/TLS connect to an AWS endpoint takes milliseconds
DEFAULT_READ_TIMEOUT = 5.0  # seconds per attempt for small API calls (KMS, SSM); S3 transfers pass their own

THROTTLING_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "LimitExceededException", "RequestThrottled",
    "SlowDown", "EC2ThrottledException", "BandwidthLimitExceeded",
})
CREDENTIAL_CODES = frozenset({
    "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
    "InvalidClientTokenId", "SignatureDoesNotMatch", "IncompleteSignature", "MissingAuthenticationToken",
    "InvalidAccessKeyId", "ExpiredToken", "TokenRefreshRequired",
})
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "403", "Forbidden"})
NOT_FOUND_CODES = frozenset({
    "NotFoundException", "NoSuchKey", "NoSuchBucket", "404", "NotFound", "ParameterNotFound",
    "ParameterVersionNotFound", "ResourceNotFoundException",
})
#: a conditional request's condition did not hold (S3 ``If-None-Match: *`` on an existing object, ``If-Match``
#: on an object that changed); HEAD answers carry no body, so only the status code
PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})


def client_config(*, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, read_timeout: float = DEFAULT_READ_TIMEOUT,
                  botocore_session: Any = None, **extra: Any) -> Any:
    """The ``botocore.config.Config`` envelope gives its clients (``extra``: more Config fields).

    Retry mode and total attempts come from ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` or the AWS config file
    when set there, else ``standard`` and :data:`DEFAULT_MAX_ATTEMPTS`.
    """
    import botocore.session
    from botocore.config import Config

    session = botocore_session if botocore_session is not None else botocore.session.get_session()
    try:
        mode = session.get_config_variable("retry_mode") or DEFAULT_RETRY_MODE
        attempts = session.get_config_variable("max_attempts")
    except ValueError as exc:
        raise UsageError(f"invalid AWS retry setting (AWS_MAX_ATTEMPTS / max_attempts): {exc}") from exc
    attempts = DEFAULT_MAX_ATTEMPTS if attempts is None else int(attempts)
    if mode not in ("standard", "adaptive", "legacy"):
        raise UsageError(f"AWS_RETRY_MODE / retry_mode must be standard, adaptive or legacy, not {mode!r}")
    if attempts < 1:
        raise UsageError(f"AWS_MAX_ATTEMPTS / max_attempts must be at least 1, not {attempts}")
    if connect_timeout <= 0 or read_timeout <= 0:
        raise UsageError("AWS connect and read timeouts must be positive")
    return Config(retries={"mode": mode, "total_max_attempts": attempts},
                  connect_timeout=connect_timeout, read_timeout=read_timeout,
                  user_agent_extra="envelope-crypt", **extra)


_loader_lock = threading.Lock()
_shared_loader: Any = None


class CoreSession:
    """What envelope uses of a ``boto3.session.Session`` (``region_name``, ``client()``, ``_session``), over a plain
    botocore session. boto3 is not imported for it: ``import boto3`` costs about 40-60 ms of a cold start here
    (it loads s3transfer), and a KMS, SSM or Secrets Manager client made by botocore is the same client a boto3
    session makes. S3 clients are the exception: boto3 adds its transfer methods (``upload_fileobj``, ...) to
    them, so :func:`new_client` makes those through boto3.
    """

    def __init__(self, botocore_session: Any) -> None:
        self._session = botocore_session

    @property
    def region_name(self) -> str | None:
        region = self._session.get_config_variable("region")
        return str(region) if region else None

    def client(self, service_name: str, region_name: str | None = None, **kwargs: Any) -> Any:
        return self._session.create_client(service_name, region_name=region_name, **kwargs)


def new_session() -> CoreSession:
    """A new session (standard credential chain, ``AWS_PROFILE``, region from the environment): a
    :class:`CoreSession`, which works wherever envelope takes a ``boto3.session.Session``.

    Sessions share one botocore data loader, so a new session does not parse the service models again.
    """
    global _shared_loader
    import botocore.session

    core = botocore.session.get_session()
    with _loader_lock:
        if _shared_loader is None:
            _shared_loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _shared_loader)
    return CoreSession(core)


def new_client(service: str, region: str | None = None, *, session: Any = None,
               connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, read_timeout: float = DEFAULT_READ_TIMEOUT,
               **extra: Any) -> Any:
    """A client for ``service`` with envelope's retry and timeout defaults (:func:`client_config`).

    ``session``: a ``boto3.session.Session`` or a :class:`CoreSession` (default: :func:`new_session`). ``region``
    None: the session's. Configuration problems (an unknown ``AWS_PROFILE``, a bad retry setting) are
    :class:`UsageError`.
    """
    from botocore.exceptions import BotoCoreError

    try:
        if session is None:
            session = new_session()
        config = client_config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                               botocore_session=session._session, **extra)
        if service == "s3" and isinstance(session, CoreSession):  # boto3's S3 transfer methods
            import boto3.session

            session = boto3.session.Session(botocore_session=session._session)
        return session.client(service, region_name=region, config=config)
    except BotoCoreError as exc:
        where = f" for region {region}" if region else ""
        raise UsageError(f"cannot create an AWS {service} client{where}: {exc}") from exc


def error_code(exc: Any) -> str:
    """The AWS error code of a botocore ``ClientError`` (``NoSuchKey``, ``AccessDenied``, ``404``, ...)."""
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "Unknown")


def safe_endpoint(client: Any, default: str = "the AWS endpoint") -> str:
    """The client's endpoint URL, without credentials embedded in it."""
    url = str(getattr(getattr(client, "meta", None), "endpoint_url", None) or default)
    parts = urlsplit(url)
    if parts.username or parts.password:  # never echo credentials embedded in a URL
        parts = parts._replace(netloc=parts.hostname or "")
    return urlunsplit(parts)


def aws_message(error: Mapping[str, Any]) -> str:
    """``": <AWS's message>"`` (whitespace folded, cut to 300 characters), or "" when there is none."""
    text = " ".join(str(error.get("Message") or "").split())
    return f": {text[:300]}" if text else ""


def transport_reason(exc: Any, client: Any) -> tuple[str, str] | None:
    """(reason, code) for a botocore transport failure: no credentials, connect or read timeout, unreachable.

    None for anything else (the caller names the exception type only: ``str(exc)`` of e.g. a
    ``ParamValidationError`` shows parameter values, which may be secret)."""
    from botocore import exceptions as bx

    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)):
        return ("no usable AWS credentials (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run "
                "with an IAM role)"), "NoCredentials"
    config = getattr(getattr(client, "meta", None), "config", None)
    if isinstance(exc, bx.ConnectTimeoutError):
        seconds = getattr(config, "connect_timeout", None)
        within = f" within {seconds:g} s" if isinstance(seconds, (int, float)) else ""
        return f"could not connect{within}", "ConnectTimeout"
    if isinstance(exc, bx.ReadTimeoutError):
        seconds = getattr(config, "read_timeout", None)
        within = f" within {seconds:g} s" if isinstance(seconds, (int, float)) else ""
        return f"no answer{within}", "ReadTimeout"
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)):
        return "connection refused, reset or unreachable", "EndpointUnreachable"
    return None


# ---------------------------------------------------------------------------------------------------------
# transient failures, and errors of storage services (SSM Parameter Store, Secrets Manager)

#: AWS answered 5xx: the request may succeed when tried again.
SERVER_ERROR_CODES = frozenset({
    "InternalServerError", "InternalFailure", "InternalError", "InternalServiceError",
    "InternalServiceErrorException", "ServiceUnavailable", "ServiceUnavailableException", "KMSInternalException",
    "DependencyTimeoutException", "RequestTimeout", "RequestTimeoutException", "500", "502", "503", "504",
})
#: Our codes for transport failures (:func:`transport_reason`) that may go away when tried again.
TRANSPORT_CODES = frozenset({"EndpointUnreachable", "ConnectTimeout", "ReadTimeout"})
#: Everything worth another try once botocore's own attempts are spent (the INIT retry budget of
#: ``envelope.aws`` uses this): throttling, 5xx answers and transport failures.
TRANSIENT_CODES = THROTTLING_CODES | SERVER_ERROR_CODES | TRANSPORT_CODES


def storage_error(exc: Any, client: Any, *, action: str, location: str, service: str) -> Any:
    """The :class:`~envelope.errors.StorageError` for a botocore failure of ``action`` on ``location``.

    ``action`` is a phrase (``"read"``, ``"write"``), ``location`` the name as the user wrote it
    (``ssm:/app/db``), ``service`` the service as people call it (``"SSM Parameter Store"``). The error's
    ``code`` is AWS's error code, or ours for transport failures (:func:`transport_reason`); AWS's message is
    kept (it names resources, never values); parameter values never are.
    """
    from botocore import exceptions as bx

    from .errors import StorageError

    if isinstance(exc, bx.ClientError):
        error = (getattr(exc, "response", None) or {}).get("Error") or {}
        code = error_code(exc)
        detail = aws_message(error)
        if code in NOT_FOUND_CODES:
            message = f"{location} not found ({code}){detail}"
        elif code in ACCESS_DENIED_CODES:
            message = f"access denied: {service} refused to {action} {location} (check IAM permissions){detail}"
        elif code in THROTTLING_CODES:
            message = f"{service} throttled the {action} of {location} ({code}); retry later"
        elif code in CREDENTIAL_CODES:
            message = f"AWS rejected the credentials to {action} {location} ({code}){detail}"
        else:
            message = f"{service} refused to {action} {location} ({code}){detail}"
        return StorageError(message, location=location, code=code)
    found = transport_reason(exc, client) if isinstance(exc, bx.BotoCoreError) else None
    if found is None:  # str(exc) of e.g. a ParamValidationError shows values: name the type only
        return StorageError(f"cannot {action} {location}: {type(exc).__name__}", location=location,
                            code=type(exc).__name__)
    reason, code = found
    if code == "NoCredentials":
        return StorageError(f"cannot {action} {location}: {reason}", location=location, code=code)
    endpoint = safe_endpoint(client, f"the {service} endpoint")
    return StorageError(f"cannot {action} {location}: could not reach {service} at {endpoint}: {reason}",
                        location=location, code=code)


# ---------------------------------------------------------------------------------------------------------
# process-wide clients (SSM, Secrets Manager, KMS for envelope.aws)

#: The environment variables a client depends on when it is made: a client is reused while they are unchanged.
_CLIENT_ENV = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
               "AWS_ACCESS_KEY_ID", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_CONFIG_FILE",
               "AWS_SHARED_CREDENTIALS_FILE")
_clients_lock = threading.Lock()
_clients: dict[tuple[str | None, ...], Any] = {}


def _endpoint_variable(service: str) -> str:
    """``AWS_ENDPOINT_URL_<SERVICE ID>`` as botocore spells it (``secretsmanager`` -> ``SECRETS_MANAGER``)."""
    special = {"secretsmanager": "SECRETS_MANAGER"}
    return "AWS_ENDPOINT_URL_" + special.get(service, service.upper().replace("-", "_"))


def cached_client(service: str, region: str | None = None) -> Any:
    """A process-wide client for ``service`` in ``region`` (None: the configured region), made once.

    Made by :func:`new_client` (envelope's retries and timeouts) and reused while the AWS settings in the
    environment it was made from (endpoints, profile, region, access key id, retry settings) are unchanged,
    so a Lambda function pays for it once per execution environment. Thread-safe. Keyed by the process id too:
    a forked child (the CLI's ``--workers``) makes its own, as a client's connection pool must not be shared
    across a fork.
    """
    import os

    key = (service, region, str(os.getpid()), os.environ.get(_endpoint_variable(service)),
           *(os.environ.get(name) for name in _CLIENT_ENV))
    with _clients_lock:
        client = _clients.get(key)
    if client is None:
        made = new_client(service, region)
        with _clients_lock:
            client = _clients.setdefault(key, made)
    return client


def clear_cached_clients() -> None:
    """Forget the clients :func:`cached_client` made."""
    with _clients_lock:
        _clients.clear()
