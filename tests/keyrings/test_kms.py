"""KMS keyrings against a real moto_server over HTTP (issue 4, esdk-format.md section 7.4).

Every test here talks to moto through botocore's real HTTP stack; the ``kms_proxy`` fixture sits in front of
moto where a test needs to see what was sent or how many calls were made.
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import textwrap

import pytest
from aws_fixtures import ACCOUNT, REGION, AwsEnv, FaultProxy

import envelope
from envelope._format import EncryptedDataKey
from envelope._keyrings.kms import new_kms_client
from envelope._suites import SUITES

OTHER_REGION = "eu-west-1"
PLAINTEXT = b"db_password=hunter2\n" * 50
CONTEXT = {"app": "billing", "stage": "test"}
UNSIGNED = 0x0478  # committing, unsigned: the context sent to KMS is exactly CONTEXT
# "Some account outside the filter". Built at run time: the repository spells out no account id but moto's.
PLACEHOLDER_ACCOUNT = "0" * 12


def edks_of(message: bytes) -> tuple[EncryptedDataKey, ...]:
    header, _, _ = envelope.read_header(io.BytesIO(message))
    return header.encrypted_data_keys


def kms_decrypt_directly(aws_env: AwsEnv, edk: EncryptedDataKey, context: dict[str, str]) -> bytes:
    """Open an EDK with a plain boto3 call, bypassing envelope: proves the wire format and the context sent."""
    arn = edk.provider_info.decode()
    region = arn.split(":")[3]
    kwargs = {"EncryptionContext": context} if context else {}
    response = aws_env.kms(region).decrypt(CiphertextBlob=edk.ciphertext, KeyId=arn, **kwargs)
    return bytes(response["Plaintext"])


# ---------------------------------------------------------------------------------------------------------
# round trips and wire format


def test_round_trip_one_key_and_wire_format(aws_env: AwsEnv) -> None:
    arn = aws_env.create_key()
    keyring = envelope.KmsKeyring(arn)
    message = envelope.encrypt(PLAINTEXT, keyring=keyring, context=CONTEXT, algorithm=UNSIGNED)

    (edk,) = edks_of(message)
    assert edk.provider_id == "aws-kms"
    assert edk.provider_info == arn.encode("utf-8")
    # ciphertext = CiphertextBlob, bound to the encryption context that was sent to KMS
    assert len(kms_decrypt_directly(aws_env, edk, CONTEXT)) == 32
    with pytest.raises(Exception, match="InvalidCiphertext"):
        kms_decrypt_directly(aws_env, edk, {})

    result = envelope.decrypt(message, keyring=keyring, required_context={"app": "billing"})
    assert result.plaintext == PLAINTEXT


def test_signed_suite_sends_the_full_context_including_the_public_key(aws_env: AwsEnv) -> None:
    arn = aws_env.create_key()
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn), context=CONTEXT, algorithm=0x0578)
    header, _, _ = envelope.read_header(io.BytesIO(message))
    assert "aws-crypto-public-key" in header.encryption_context
    assert len(kms_decrypt_directly(aws_env, header.encrypted_data_keys[0], dict(header.encryption_context))) == 32
    with pytest.raises(Exception, match="InvalidCiphertext"):
        kms_decrypt_directly(aws_env, header.encrypted_data_keys[0], CONTEXT)
    assert envelope.decrypt(message, keyring=envelope.KmsKeyring(arn)).plaintext == PLAINTEXT


@pytest.mark.parametrize("suite_id", [0x0114, 0x0146, 0x0478])
def test_generate_data_key_asks_for_the_suite_key_length(aws_env: AwsEnv, kms_proxy: FaultProxy,
                                                           suite_id: int) -> None:
    arn = aws_env.create_key()
    keyring = envelope.KmsKeyring(arn, grant_tokens=["token-1", "token-2"])
    policy = "require-encrypt-require-decrypt" if SUITES[suite_id].committing else "forbid-encrypt-allow-decrypt"
    message = envelope.encrypt(PLAINTEXT, keyring=keyring, context=CONTEXT, algorithm=suite_id,
                               commitment_policy=policy)
    operation, body = kms_proxy.requests[0]
    assert operation == "GenerateDataKey"
    assert body["NumberOfBytes"] == SUITES[suite_id].key_length
    assert body["EncryptionContext"] == CONTEXT
    assert body["GrantTokens"] == ["token-1", "token-2"]
    assert body["KeyId"] == arn
    assert envelope.decrypt(message, keyring=keyring, commitment_policy=policy).plaintext == PLAINTEXT
    operation, body = kms_proxy.requests[-1]
    assert operation == "Decrypt"
    assert body["KeyId"] == arn and body["EncryptionContext"] == CONTEXT
    assert body["GrantTokens"] == ["token-1", "token-2"]


def test_empty_context_and_no_grant_tokens_are_left_out(aws_env: AwsEnv, kms_proxy: FaultProxy) -> None:
    arn = aws_env.create_key()
    keyring = envelope.KmsKeyring(arn)
    message = envelope.encrypt(PLAINTEXT, keyring=keyring, algorithm=UNSIGNED)
    assert envelope.decrypt(message, keyring=keyring).plaintext == PLAINTEXT
    assert [op for op, _ in kms_proxy.requests] == ["GenerateDataKey", "Decrypt"]
    for _, body in kms_proxy.requests:
        assert "EncryptionContext" not in body and "GrantTokens" not in body


def test_two_keys_in_two_regions_wrap_the_same_data_key(aws_env: AwsEnv, kms_proxy: FaultProxy) -> None:
    east = aws_env.create_key(REGION)
    west = aws_env.create_key(OTHER_REGION)
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring([east, west]), context=CONTEXT,
                               algorithm=UNSIGNED)
    assert kms_proxy.calls("GenerateDataKey") == 1 and kms_proxy.calls("Encrypt") == 1
    first, second = edks_of(message)
    assert (first.provider_info.decode(), second.provider_info.decode()) == (east, west)
    assert kms_decrypt_directly(aws_env, first, CONTEXT) == kms_decrypt_directly(aws_env, second, CONTEXT)

    # each key alone opens the message; the west-only keyring skips the east EDK without calling KMS for it
    kms_proxy.reset_counts()
    assert envelope.decrypt(message, keyring=envelope.KmsKeyring(west)).plaintext == PLAINTEXT
    assert [body["KeyId"] for op, body in kms_proxy.requests if op == "Decrypt"] == [west]
    assert envelope.decrypt(message, keyring=envelope.KmsKeyring(east)).plaintext == PLAINTEXT


def key_forms(aws_env: AwsEnv, region: str = REGION) -> dict[str, str]:
    arn = aws_env.create_key(region, alias="alias/billing")
    key_id = arn.rsplit("/", 1)[1]
    return {"key-arn": arn, "key-id": key_id, "alias": "alias/billing",
            "alias-arn": f"arn:aws:kms:{region}:{ACCOUNT}:alias/billing"}


def test_any_identifier_encrypts_and_decrypts(aws_env: AwsEnv) -> None:
    forms = key_forms(aws_env)
    messages = {}
    for form, identifier in forms.items():
        messages[form] = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(identifier), context=CONTEXT)
        assert edks_of(messages[form])[0].provider_info == forms["key-arn"].encode()  # always the key ARN
    for form, identifier in forms.items():
        keyring = envelope.KmsKeyring(identifier)
        for encrypted_with, message in messages.items():
            assert envelope.decrypt(message, keyring=keyring).plaintext == PLAINTEXT, (encrypted_with, form)


def test_alias_is_resolved_once_with_describe_key(aws_env: AwsEnv, kms_proxy: FaultProxy) -> None:
    forms = key_forms(aws_env)
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(forms["key-arn"]), context=CONTEXT)
    kms_proxy.reset_counts()
    keyring = envelope.KmsKeyring("alias/billing")
    for _ in range(3):
        assert envelope.decrypt(message, keyring=keyring).plaintext == PLAINTEXT
    assert kms_proxy.calls("DescribeKey") == 1
    assert kms_proxy.calls("Decrypt") == 3
    # Decrypt goes out with the resolved key ARN, so the answer's KeyId can be checked against it
    assert {body["KeyId"] for op, body in kms_proxy.requests if op == "Decrypt"} == {forms["key-arn"]}

    # a keyring that encrypted with the alias already knows its ARN: no DescribeKey at all
    kms_proxy.reset_counts()
    keyring = envelope.KmsKeyring("alias/billing")
    message = envelope.encrypt(PLAINTEXT, keyring=keyring, context=CONTEXT)
    assert envelope.decrypt(message, keyring=keyring).plaintext == PLAINTEXT
    assert kms_proxy.calls("DescribeKey") == 0


def test_alias_identifiers_use_the_configured_region(aws_env: AwsEnv) -> None:
    west = aws_env.create_key(OTHER_REGION, alias="alias/west-only")
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring("alias/west-only", region=OTHER_REGION))
    assert edks_of(message)[0].provider_info == west.encode()
    # the default region (us-east-1 here) has no such alias: the error names the alias and the region
    with pytest.raises(envelope.KmsError, match=r"alias/west-only \(region us-east-1\) not found") as caught:
        envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring("alias/west-only"))
    assert caught.value.code == "NotFoundException"


def test_non_arn_identifier_without_any_region_is_a_usage_error(aws_env: AwsEnv,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    arn = aws_env.create_key()
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(envelope.UsageError, match="no AWS region"):
        envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring("alias/anything"))
    # a key ARN carries its region
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn))
    assert envelope.decrypt(message, keyring=envelope.KmsKeyring(arn)).plaintext == PLAINTEXT


def test_strict_keyring_ignores_edks_of_other_keys(aws_env: AwsEnv, kms_proxy: FaultProxy) -> None:
    mine, other = aws_env.create_key(), aws_env.create_key()
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(other), context=CONTEXT)
    kms_proxy.reset_counts()
    with pytest.raises(envelope.KeyringError, match="no encrypted data key was wrapped by a configured key"):
        envelope.decrypt(message, keyring=envelope.KmsKeyring(mine))
    assert kms_proxy.calls("Decrypt") == 0


def test_kms_and_local_keys_mix_in_a_multi_keyring(aws_env: AwsEnv, aes_keyring: envelope.RawAesKeyring) -> None:
    arn = aws_env.create_key()
    multi = envelope.MultiKeyring(generator=envelope.KmsKeyring(arn), children=[aes_keyring])
    message = envelope.encrypt(PLAINTEXT, keyring=multi, context=CONTEXT)
    assert [e.provider_id for e in edks_of(message)] == ["aws-kms", "envelope"]
    assert envelope.decrypt(message, keyring=aes_keyring).plaintext == PLAINTEXT
    assert envelope.decrypt(message, keyring=envelope.KmsKeyring(arn)).plaintext == PLAINTEXT
    # and KMS as a child of a local generator (Encrypt, not GenerateDataKey)
    multi = envelope.MultiKeyring(generator=aes_keyring, children=[envelope.KmsKeyring(arn)])
    message = envelope.encrypt(PLAINTEXT, keyring=multi, context=CONTEXT)
    assert envelope.decrypt(message, keyring=envelope.KmsKeyring(arn)).plaintext == PLAINTEXT


# ---------------------------------------------------------------------------------------------------------
# discovery


def test_discovery_decrypts_keys_in_any_region(aws_env: AwsEnv) -> None:
    west = aws_env.create_key(OTHER_REGION)
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(west), context=CONTEXT)
    assert envelope.decrypt(message, keyring=envelope.KmsDiscoveryKeyring()).plaintext == PLAINTEXT


def test_discovery_filter_admits_listed_accounts_and_refuses_others(aws_env: AwsEnv, kms_proxy: FaultProxy) -> None:
    arn = aws_env.create_key()
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn), context=CONTEXT)
    allowed = envelope.KmsDiscoveryKeyring(discovery_filter=envelope.DiscoveryFilter("aws", [ACCOUNT]))
    assert envelope.decrypt(message, keyring=allowed).plaintext == PLAINTEXT

    kms_proxy.reset_counts()
    for refused_filter in (envelope.DiscoveryFilter("aws", [PLACEHOLDER_ACCOUNT]),
                           envelope.DiscoveryFilter("aws-cn", [ACCOUNT])):
        keyring = envelope.KmsDiscoveryKeyring(discovery_filter=refused_filter)
        with pytest.raises(envelope.KeyringError, match="outside the discovery filter"):
            envelope.decrypt(message, keyring=keyring)
    assert kms_proxy.calls("Decrypt") == 0  # refused before any call


def test_discovery_keyring_refuses_to_encrypt(aws_env: AwsEnv) -> None:
    with pytest.raises(envelope.UsageError, match="only decrypts"):
        envelope.encrypt(PLAINTEXT, keyring=envelope.KmsDiscoveryKeyring())


def test_invalid_aws_kms_provider_info_fails_the_whole_call(aws_env: AwsEnv) -> None:
    arn = aws_env.create_key()
    suite = SUITES[UNSIGNED]
    _, (good,) = envelope.KmsKeyring(arn).wrap(suite, CONTEXT)
    bad = EncryptedDataKey("aws-kms", b"alias/not-an-arn", b"x" * 10)
    for keyring in (envelope.KmsKeyring(arn), envelope.KmsDiscoveryKeyring()):
        with pytest.raises(envelope.KeyringError, match="not a KMS key ARN"):
            keyring.unwrap(suite, CONTEXT, [good, bad])


# ---------------------------------------------------------------------------------------------------------
# refusals: wrong context, unknown / deleted key, access denied


def test_wrong_context_is_refused_by_kms(aws_env: AwsEnv) -> None:
    arn = aws_env.create_key()
    suite = SUITES[UNSIGNED]
    data_key, edks = envelope.KmsKeyring(arn).wrap(suite, CONTEXT)
    for keyring in (envelope.KmsKeyring(arn), envelope.KmsDiscoveryKeyring()):
        assert keyring.unwrap(suite, CONTEXT, edks) == data_key
        with pytest.raises(envelope.KmsError, match="encryption context differs") as caught:
            keyring.unwrap(suite, {**CONTEXT, "stage": "prod"}, edks)
        assert caught.value.code == "InvalidCiphertextException"
        assert caught.value.key_id == arn and arn in str(caught.value)


def test_unknown_key_is_refused_with_its_arn(aws_env: AwsEnv) -> None:
    unknown = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-000000000000"
    with pytest.raises(envelope.KmsError, match="not found") as caught:
        envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(unknown))
    assert caught.value.key_id == unknown and caught.value.code == "NotFoundException"
    assert unknown in str(caught.value)


def test_deleted_key_is_refused(aws_env: AwsEnv) -> None:
    arn = aws_env.create_key()
    keyring = envelope.KmsKeyring(arn)
    message = envelope.encrypt(PLAINTEXT, keyring=keyring, context=CONTEXT)
    aws_env.server.reset()  # every key is gone, as after a completed ScheduleKeyDeletion
    for decrypting in (keyring, envelope.KmsDiscoveryKeyring()):
        with pytest.raises(envelope.KeyringError, match="not found") as caught:
            envelope.decrypt(message, keyring=decrypting)
        assert arn in str(caught.value)


def test_access_denied_names_the_key(aws_env: AwsEnv) -> None:
    key_a, key_b = aws_env.create_key(), aws_env.create_key()
    suite = SUITES[UNSIGNED]
    _, (edk,) = envelope.KmsKeyring(key_a).wrap(suite, CONTEXT)
    # an EDK that claims key B but holds key A's ciphertext: moto answers AccessDeniedException
    forged = EncryptedDataKey("aws-kms", key_b.encode(), edk.ciphertext)
    with pytest.raises(envelope.KmsError, match="access denied") as caught:
        envelope.KmsKeyring(key_b).unwrap(suite, CONTEXT, [forged])
    assert caught.value.code == "AccessDeniedException" and caught.value.key_id == key_b
    assert key_b in str(caught.value)


def test_failures_of_every_edk_are_collected(aws_env: AwsEnv) -> None:
    key_a, key_b = aws_env.create_key(), aws_env.create_key(OTHER_REGION)
    suite = SUITES[UNSIGNED]
    data_key, edks = envelope.KmsKeyring([key_a, key_b]).wrap(suite, CONTEXT)
    keyring = envelope.KmsKeyring([key_a, key_b])
    with pytest.raises(envelope.KmsError) as caught:
        keyring.unwrap(suite, {"app": "other"}, edks)
    assert len(caught.value.attempts) == 2
    assert key_a in caught.value.attempts[0] and key_b in caught.value.attempts[1]
    # the first EDK failing does not stop the second from opening
    forged = EncryptedDataKey("aws-kms", key_a.encode(), edks[1].ciphertext)
    assert keyring.unwrap(suite, CONTEXT, [forged, edks[1]]) == data_key


# ---------------------------------------------------------------------------------------------------------
# clients: injection, endpoints from the environment, lazy boto3


def test_injected_client_factory_is_asked_once_per_region(aws_env: AwsEnv) -> None:
    east, west = aws_env.create_key(REGION), aws_env.create_key(OTHER_REGION)
    asked: list[str] = []

    def factory(region: str) -> object:
        asked.append(region)
        return new_kms_client(region)

    keyring = envelope.KmsKeyring([east, west], client_factory=factory)
    for _ in range(2):
        message = envelope.encrypt(PLAINTEXT, keyring=keyring, context=CONTEXT)
        assert envelope.decrypt(message, keyring=keyring).plaintext == PLAINTEXT
    assert asked == [REGION, OTHER_REGION]


def test_injected_client_is_used_for_every_call(aws_env: AwsEnv, kms_proxy: FaultProxy) -> None:
    import boto3

    arn = aws_env.create_key()
    # this client goes straight to moto, not through the proxy the environment points at
    client = boto3.client("kms", region_name=REGION, endpoint_url=aws_env.url)
    keyring = envelope.KmsKeyring(arn, client=client)
    message = envelope.encrypt(PLAINTEXT, keyring=keyring)
    assert envelope.decrypt(message, keyring=keyring).plaintext == PLAINTEXT
    assert sum(kms_proxy.received.values()) == 0
    with pytest.raises(envelope.UsageError):
        envelope.KmsKeyring(arn, client=client, client_factory=new_kms_client)


def test_aws_endpoint_url_is_honoured(aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    arn = aws_env.create_key()
    with FaultProxy(aws_env.url) as proxy:
        monkeypatch.delenv("AWS_ENDPOINT_URL_KMS")
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)  # the all-services variable
        message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn))
        assert proxy.calls("GenerateDataKey") == 1
        # the KMS-specific variable wins over the all-services one
        with FaultProxy(aws_env.url) as kms_only:
            monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", kms_only.url)
            assert envelope.decrypt(message, keyring=envelope.KmsKeyring(arn)).plaintext == PLAINTEXT
            assert kms_only.calls("Decrypt") == 1 and proxy.calls("Decrypt") == 0


def test_keyrings_survive_pickling_for_worker_processes(aws_env: AwsEnv) -> None:
    arn = aws_env.create_key()
    keyring = envelope.KmsKeyring(arn, grant_tokens=["t"])
    message = envelope.encrypt(PLAINTEXT, keyring=keyring, context=CONTEXT)  # clients exist now
    for copy in (pickle.loads(pickle.dumps(keyring)), pickle.loads(pickle.dumps(envelope.KmsDiscoveryKeyring()))):
        assert envelope.decrypt(message, keyring=copy).plaintext == PLAINTEXT
    with pytest.raises(TypeError, match="client_factory"):
        pickle.dumps(envelope.KmsKeyring(arn, client=new_kms_client(REGION)))


def test_import_envelope_does_not_import_boto3() -> None:
    code = textwrap.dedent("""
        import sys
        import envelope
        keyring = envelope.KmsKeyring("arn:aws:kms:us-east-1:123456789012:key/k")  # constructing is free
        discovery = envelope.KmsDiscoveryKeyring()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore"))
        print(",".join(loaded) or "none")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "none"


# ---------------------------------------------------------------------------------------------------------
# argument checking


@pytest.mark.parametrize("bad", ["", " alias/x", "alias/", "arn:aws:kms:us-east-1::key/k", "arn:aws:s3:::bucket",
                                 "arn:aws:kms:us-east-1:123456789012:grant/x", "key/abc", "a b"])
def test_bad_key_identifiers_are_usage_errors(bad: str) -> None:
    with pytest.raises(envelope.UsageError):
        envelope.KmsKeyring(bad)


def test_bad_arguments_are_usage_errors() -> None:
    with pytest.raises(envelope.UsageError):
        envelope.KmsKeyring([])
    with pytest.raises(envelope.UsageError):
        envelope.KmsKeyring("alias/x", grant_tokens="one-string")
    with pytest.raises(envelope.UsageError):
        envelope.DiscoveryFilter("aws", [])
    with pytest.raises(envelope.UsageError):
        envelope.DiscoveryFilter("", [ACCOUNT])
    assert envelope.DiscoveryFilter("aws", ACCOUNT).account_ids == frozenset({ACCOUNT})
