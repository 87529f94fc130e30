"""The 11 ESDK algorithm suites and the commitment policies, as pure data (esdk-format.md section 2).

No cryptography is imported here: key derivation and signatures live in :mod:`envelope._crypto`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import PolicyError, UsageError

__all__ = [
    "DEFAULT_SUITE",
    "SUITES",
    "AlgorithmSuite",
    "CommitmentPolicy",
    "check_decrypt_policy",
    "check_encrypt_policy",
    "default_suite_for",
    "resolve_policy",
    "resolve_suite",
]


@dataclass(frozen=True)
class AlgorithmSuite:
    """One row of the suite table (section 2.1)."""

    id: int
    name: str  # the aws-encryption-sdk (Python) enum name
    spec_name: str  # the name in the specification's table
    key_length: int  # bytes of data key and of derived encryption key
    kdf: str  # "identity", "hkdf" (v1) or "commit" (v2, HKDF-SHA512 with commitment)
    kdf_hash: str | None  # "sha256", "sha384", "sha512"
    curve: str | None  # "p256", "p384" or None when the suite does not sign
    message_version: int  # 1 or 2

    @property
    def committing(self) -> bool:
        return self.kdf == "commit"

    @property
    def signed(self) -> bool:
        return self.curve is not None

    @property
    def cacheable(self) -> bool:
        """Identity-KDF suites must never reuse a data key (section 8)."""
        return self.kdf != "identity"

    @property
    def message_id_length(self) -> int:
        return 16 if self.message_version == 1 else 32

    @property
    def signature_hash(self) -> str | None:
        return {"p256": "sha256", "p384": "sha384"}.get(self.curve or "")

    @property
    def signature_length(self) -> int:
        """DER length the ESDK for Python always writes (readers accept any length)."""
        return {"p256": 71, "p384": 103}.get(self.curve or "", 0)

    @property
    def hex_id(self) -> str:
        return f"0x{self.id:04x}"

    def data_key_error(self, data_key: bytes) -> str | None:
        """The one data-key length rule: None when ``data_key`` fits this suite, else what is wrong with it
        ("a 16-byte data key; suite 0x0478 needs 32"), for the caller's error of its own class."""
        if len(data_key) == self.key_length:
            return None
        return f"a {len(data_key)}-byte data key; suite {self.hex_id} needs {self.key_length}"


_ROWS = [
    (0x0014, "AES_128_GCM_IV12_TAG16", "AES_128_GCM_IV12_TAG16_NO_KDF", 16, "identity", None, None, 1),
    (0x0046, "AES_192_GCM_IV12_TAG16", "AES_192_GCM_IV12_TAG16_NO_KDF", 24, "identity", None, None, 1),
    (0x0078, "AES_256_GCM_IV12_TAG16", "AES_256_GCM_IV12_TAG16_NO_KDF", 32, "identity", None, None, 1),
    (0x0114, "AES_128_GCM_IV12_TAG16_HKDF_SHA256", "AES_128_GCM_IV12_TAG16_HKDF_SHA256", 16, "hkdf", "sha256",
     None, 1),
    (0x0146, "AES_192_GCM_IV12_TAG16_HKDF_SHA256", "AES_192_GCM_IV12_TAG16_HKDF_SHA256", 24, "hkdf", "sha256",
     None, 1),
    (0x0178, "AES_256_GCM_IV12_TAG16_HKDF_SHA256", "AES_256_GCM_IV12_TAG16_HKDF_SHA256", 32, "hkdf", "sha256",
     None, 1),
    (0x0214, "AES_128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256", "AES_128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256",
     16, "hkdf", "sha256", "p256", 1),
    (0x0346, "AES_192_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384", "AES_192_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384",
     24, "hkdf", "sha384", "p384", 1),
    (0x0378, "AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384", "AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384",
     32, "hkdf", "sha384", "p384", 1),
    (0x0478, "AES_256_GCM_HKDF_SHA512_COMMIT_KEY", "AES_256_GCM_HKDF_SHA512_COMMIT_KEY", 32, "commit", "sha512",
     None, 2),
    (0x0578, "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384", "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
     32, "commit", "sha512", "p384", 2),
]

SUITES: dict[int, AlgorithmSuite] = {row[0]: AlgorithmSuite(*row) for row in _ROWS}

#: envelope's default: committing and unsigned (the ESDK's own default is the signed 0x0578).
DEFAULT_SUITE = SUITES[0x0478]

_BY_NAME: dict[str, AlgorithmSuite] = {}
for _s in SUITES.values():
    _BY_NAME[_s.name] = _s
    _BY_NAME[_s.spec_name] = _s


def resolve_suite(value: int | str | AlgorithmSuite | None) -> AlgorithmSuite | None:
    """Accept a suite ID (``0x0478``), a hex string (``"0x0478"``, ``"0478"``) or an ESDK name."""
    if value is None or isinstance(value, AlgorithmSuite):
        return value
    if isinstance(value, bool):
        raise UsageError(f"unknown algorithm suite {value!r}")
    if isinstance(value, int):
        suite = SUITES.get(value)
        if suite is None:
            raise UsageError(f"unknown algorithm suite 0x{value:04x}")
        return suite
    text = value.strip()
    named = _BY_NAME.get(text.upper().replace("-", "_"))
    if named is not None:
        return named
    digits = text[2:] if text.lower().startswith("0x") else text
    try:
        number = int(digits, 16)
    except ValueError:
        number = -1
    if number in SUITES and len(digits) <= 4:
        return SUITES[number]
    raise UsageError(f"unknown algorithm suite {value!r} (use an ESDK name or an ID such as 0x0478)")


class CommitmentPolicy(enum.Enum):
    """The ESDK's three commitment policies (section 2.2)."""

    FORBID_ENCRYPT_ALLOW_DECRYPT = "forbid-encrypt-allow-decrypt"
    REQUIRE_ENCRYPT_ALLOW_DECRYPT = "require-encrypt-allow-decrypt"
    REQUIRE_ENCRYPT_REQUIRE_DECRYPT = "require-encrypt-require-decrypt"


DEFAULT_POLICY = CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT


def resolve_policy(value: CommitmentPolicy | str | None) -> CommitmentPolicy:
    """Accept the enum, the ESDK name (``REQUIRE_ENCRYPT_REQUIRE_DECRYPT``) or the CLI spelling."""
    if value is None:
        return DEFAULT_POLICY
    if isinstance(value, CommitmentPolicy):
        return value
    key = str(value).strip().lower().replace("_", "-")
    for policy in CommitmentPolicy:
        if policy.value == key:
            return policy
    names = ", ".join(p.value for p in CommitmentPolicy)
    raise UsageError(f"unknown commitment policy {value!r} (one of {names})")


def default_suite_for(policy: CommitmentPolicy) -> AlgorithmSuite:
    """The suite used when the caller names none: 0x0478, or 0x0378 when commitment is forbidden."""
    if policy is CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT:
        return SUITES[0x0378]
    return DEFAULT_SUITE


def check_encrypt_policy(suite: AlgorithmSuite, policy: CommitmentPolicy) -> None:
    if policy is CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT and suite.committing:
        raise UsageError(f"suite {suite.hex_id} commits to its key, which policy {policy.value} forbids")
    if policy is not CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT and not suite.committing:
        raise UsageError(
            f"suite {suite.hex_id} does not commit to its key; policy {policy.value} requires 0x0478 or 0x0578"
        )


def check_decrypt_policy(suite: AlgorithmSuite, policy: CommitmentPolicy) -> None:
    if policy is CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT and not suite.committing:
        raise PolicyError(
            f"message uses suite {suite.hex_id}, which does not commit to its key; "
            f"commitment policy {policy.value} refuses it (use require-encrypt-allow-decrypt to read it)"
        )
