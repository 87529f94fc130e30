"""AWS KMS key identifiers and ARNs (esdk-format.md section 7.4). Pure string logic: no boto3, no I/O.

A valid KMS ARN has 6 parts separated by ``:``: ``arn``, a non-empty partition, ``kms``, a non-empty region,
a non-empty account and a resource ``key/<id>`` or ``alias/<name>`` (later ``/`` belong to the id).
A Multi-Region key (MRK) is a ``key`` resource whose id starts with ``mrk-``; an alias never is one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import UsageError

__all__ = ["KmsArn", "check_key_identifier", "is_mrk_identifier", "mrk_match", "parse_arn", "try_parse_arn"]


@dataclass(frozen=True)
class KmsArn:
    partition: str
    service: str
    region: str
    account: str
    resource_type: str  # "key" or "alias"
    resource_id: str

    def __str__(self) -> str:
        return (f"arn:{self.partition}:{self.service}:{self.region}:{self.account}:"
                f"{self.resource_type}/{self.resource_id}")

    @property
    def is_key(self) -> bool:
        return self.resource_type == "key"

    @property
    def is_mrk(self) -> bool:
        return self.resource_type == "key" and self.resource_id.startswith("mrk-")

    def with_region(self, region: str) -> KmsArn:
        return replace(self, region=region)


def try_parse_arn(text: str) -> KmsArn | None:
    """The parsed ARN, or None when ``text`` is not a valid KMS ARN (section 7.4)."""
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "kms":
        return None
    _, partition, service, region, account, resource = parts
    if not partition or not region or not account:
        return None
    resource_type, sep, resource_id = resource.partition("/")
    if not sep or resource_type not in ("key", "alias") or not resource_id:
        return None
    return KmsArn(partition, service, region, account, resource_type, resource_id)


def parse_arn(text: str) -> KmsArn:
    arn = try_parse_arn(text)
    if arn is None:
        raise UsageError(f"{text!r} is not a valid AWS KMS ARN (arn:PARTITION:kms:REGION:ACCOUNT:key/ID)")
    return arn


def check_key_identifier(identifier: str) -> str:
    """Accept a key ARN, alias ARN, ``alias/NAME``, key id or ``mrk-`` id; raise UsageError otherwise."""
    if not isinstance(identifier, str) or not identifier.strip():
        raise UsageError("an AWS KMS key identifier must be a non-empty string")
    if identifier != identifier.strip() or any(c.isspace() for c in identifier):
        raise UsageError(f"AWS KMS key identifier {identifier!r} contains white space")
    if identifier.startswith("arn:"):
        parse_arn(identifier)
    elif identifier.startswith("alias/"):
        if identifier == "alias/":
            raise UsageError("AWS KMS alias 'alias/' has no name")
    elif ":" in identifier or "/" in identifier:
        raise UsageError(f"{identifier!r} is not an AWS KMS key ARN, alias ARN, alias/NAME or key id")
    return identifier


def is_mrk_identifier(identifier: str) -> bool:
    """True for an MRK key ARN or a bare ``mrk-`` key id; never for an alias."""
    arn = try_parse_arn(identifier)
    if arn is not None:
        return arn.is_mrk
    return identifier.startswith("mrk-")


def mrk_match(a: str, b: str) -> bool:
    """The ESDK's "AWS KMS MRK Match for Decrypt" (section 7.4).

    Equal identifiers match. Otherwise both must be MRK key ARNs that agree on partition, service, account,
    resource type and resource id: only the region may differ.
    """
    if a == b:
        return True
    arn_a, arn_b = try_parse_arn(a), try_parse_arn(b)
    if arn_a is None or arn_b is None or not (arn_a.is_mrk and arn_b.is_mrk):
        return False
    return arn_a.with_region(arn_b.region) == arn_b
