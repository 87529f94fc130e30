"""Secrets where they live: Lambda environments, SSM Parameter Store and AWS Secrets Manager.

At start-up (a Lambda function's INIT, a container's entry point)::

    import envelope, envelope.aws

    secrets = envelope.aws.load_env(["DB_PASSWORD", "API_TOKEN"], keyring=envelope.KmsKeyring([KEY_ARN]))
    config = envelope.aws.load_env(["ssm:/app/prod/config"], keyring=keyring, transform="json")

:func:`load_env` decrypts environment variables holding base64 ESDK messages (made by ``envelope
encrypt-env`` or :func:`encrypt_env`) and the Lambda console's encryption-helper values (raw KMS ciphertext
with the ``LambdaFunctionName`` context), and ESDK messages kept in SSM parameters and secrets; it caches the
answers process-wide for ``max_age`` seconds and retries transient failures within its own budget
(:class:`RetryBudget`). The full rules are in ``docs/secrets.md``.

Storage (what ``ssm:`` / ``secretsmanager:`` inputs and outputs of the CLI use): :func:`read_message`,
:func:`write_message` (size checked before anything is written, ``force`` to replace), :func:`read_value` /
:func:`write_value` (plaintext values), :func:`exists`, :func:`check_size`, :func:`max_message_size`, and
:func:`load_keyring` for a key file kept in a parameter or secret (``--key ssm:/path``). Errors are
:class:`envelope.StorageError` with ``location`` and ``code`` (:data:`TOO_LARGE`, :data:`ALREADY_EXISTS`,
one of :data:`NOT_FOUND`, or AWS's code).

boto3 is imported on the first AWS call, never by ``import envelope.aws``.
"""

from typing import TYPE_CHECKING, Any

from ._loadenv import (
    DEFAULT_MAX_AGE,
    ENV_SUITE,
    LAMBDA_CONTEXT_KEY,
    RetryBudget,
    clear_cache,
    encrypt_env,
    load_env,
)

if TYPE_CHECKING:
    from ._bundle import flatten, parse_bundle
    from ._stored import (
        ALREADY_EXISTS,
        NOT_FOUND,
        SECRETS_MANAGER_LIMIT,
        SSM_ADVANCED_LIMIT,
        SSM_STANDARD_LIMIT,
        SSM_TIERS,
        TOO_LARGE,
        Location,
        StoredValue,
        check_size,
        exists,
        is_location,
        load_keyring,
        max_message_size,
        parse_location,
        read_message,
        read_value,
        write_message,
        write_value,
    )

#: Loaded on first use (PEP 562), so that a cold start reading environment variables does not pay for them.
_LAZY = {"flatten": "_bundle", "parse_bundle": "_bundle"}


def __getattr__(name: str) -> Any:
    import importlib

    module = _LAZY.get(name, "_stored" if name in __all__ else None)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"envelope.{module}"), name)


__all__ = [
    "ALREADY_EXISTS",
    "DEFAULT_MAX_AGE",
    "ENV_SUITE",
    "LAMBDA_CONTEXT_KEY",
    "NOT_FOUND",
    "SECRETS_MANAGER_LIMIT",
    "SSM_ADVANCED_LIMIT",
    "SSM_STANDARD_LIMIT",
    "SSM_TIERS",
    "TOO_LARGE",
    "Location",
    "RetryBudget",
    "StoredValue",
    "check_size",
    "clear_cache",
    "encrypt_env",
    "exists",
    "flatten",
    "is_location",
    "load_env",
    "load_keyring",
    "max_message_size",
    "parse_bundle",
    "parse_location",
    "read_message",
    "read_value",
    "write_message",
    "write_value",
]


def __dir__() -> list[str]:
    return sorted(__all__)
