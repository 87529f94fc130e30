"""Messages, values and key files in SSM Parameter Store and Secrets Manager, over HTTP against moto_server.

moto differs from AWS here, and the tests prove envelope's own behaviour instead of relying on moto's:
* moto enforces **no size limit** (AWS: 4,096 characters on the SSM standard tier, 8,192 advanced, 65,536 bytes
  per secret); ``test_moto_does_not_enforce_sizes`` shows it, the boundary tests show envelope refuses first.
* moto stores an SSM ``SecureString`` as ``kms:<KeyId>:<value>`` and **never calls KMS** (AWS encrypts it).
* moto's IAM enforcement (``INITIAL_NO_AUTH_ACTION_COUNT``) checks actions, not resources, and answers a
  JSON-protocol call with an XML 403 that botocore reads as code ``403`` (AWS: ``AccessDeniedException``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from aws_fixtures import MotoServer, ServicesEnv, separate_moto_server, stop_moto_server

import envelope
import envelope.aws as aws

pytestmark = pytest.mark.usefixtures("services_env")


def _message(keyring: envelope.Keyring, size: int) -> bytes:
    """An ESDK message of exactly ``size`` bytes (one frame: each plaintext byte adds one byte)."""
    overhead = len(envelope.encrypt(b"", keyring=keyring))
    message = envelope.encrypt(b"x" * (size - overhead), keyring=keyring)
    assert len(message) == size
    return message


def _missing(services: ServicesEnv, name: str) -> bool:
    try:
        services.ssm().get_parameter(Name=name)
    except services.ssm().exceptions.ParameterNotFound:
        return True
    return False


# ---------------------------------------------------------------------------------------------------------
# round trips


def test_ssm_round_trip_is_base64_in_a_string_parameter(services_env: ServicesEnv,
                                                         aes_keyring: envelope.RawAesKeyring) -> None:
    message = envelope.encrypt(b"db password", keyring=aes_keyring, context={"app": "web"})
    version = aws.write_message("ssm:/app/db", message)
    stored = services_env.ssm().get_parameter(Name="/app/db")["Parameter"]
    assert stored["Type"] == "String" and stored["Value"] == base64.b64encode(message).decode()
    assert version == "1"
    read = aws.read_message("ssm:/app/db")
    assert read.data == message and read.version == "1" and read.kind == "String"
    assert envelope.decrypt(read.data, keyring=aes_keyring).plaintext == b"db password"


def test_secrets_manager_round_trip_is_secret_binary(services_env: ServicesEnv,
                                                     aes_keyring: envelope.RawAesKeyring) -> None:
    message = envelope.encrypt(b"api token", keyring=aes_keyring)
    aws.write_message("secretsmanager:prod/api", message)
    stored = services_env.secrets().get_secret_value(SecretId="prod/api")
    assert stored["SecretBinary"] == message and "SecretString" not in stored
    read = aws.read_message("secretsmanager:prod/api")
    assert read.data == message and read.kind == "SecretBinary"


def test_secret_string_holding_base64_is_read(services_env: ServicesEnv, aes_keyring: envelope.RawAesKeyring) -> None:
    message = envelope.encrypt(b"from SecretString", keyring=aes_keyring)
    arn = services_env.secrets().create_secret(Name="legacy", SecretString=base64.b64encode(message).decode()
                                               + "\n")["ARN"]
    assert aws.read_message("secretsmanager:legacy").data == message
    assert aws.read_message(f"secretsmanager:{arn}").data == message  # by ARN too


def test_a_value_that_is_not_base64_is_not_a_message(services_env: ServicesEnv) -> None:
    services_env.ssm().put_parameter(Name="/plain", Value="hunter2 is not base64!", Type="String")
    with pytest.raises(envelope.FormatError, match=r"ssm:/plain does not hold an ESDK message") as caught:
        aws.read_message("ssm:/plain")
    assert "hunter2" not in str(caught.value)


def test_plaintext_values_go_to_secure_string_and_secret_string(services_env: ServicesEnv) -> None:
    aws.write_value("ssm:/plain/text", b"s3cr3t")
    assert services_env.ssm().get_parameter(Name="/plain/text")["Parameter"]["Type"] == "SecureString"
    assert aws.read_value("ssm:/plain/text").data == b"s3cr3t"
    aws.write_value("secretsmanager:plain-text", b"s3cr3t")
    aws.write_value("secretsmanager:plain-binary", b"\xff\x00binary")
    assert services_env.secrets().get_secret_value(SecretId="plain-text")["SecretString"] == "s3cr3t"
    assert aws.read_value("secretsmanager:plain-binary").data == b"\xff\x00binary"
    with pytest.raises(envelope.UsageError, match="not UTF-8 text"):
        aws.write_value("ssm:/plain/binary", b"\xff\x00")
    assert _missing(services_env, "/plain/binary")


# ---------------------------------------------------------------------------------------------------------
# limits, at exactly the boundary (moto enforces none of them)


def test_moto_does_not_enforce_sizes(services_env: ServicesEnv) -> None:
    services_env.ssm().put_parameter(Name="/huge", Value="x" * 100_000, Type="String")
    services_env.secrets().create_secret(Name="huge", SecretBinary=b"x" * 70_000)
    assert len(services_env.ssm().get_parameter(Name="/huge")["Parameter"]["Value"]) == 100_000


@pytest.mark.parametrize(("tier", "limit"), [("standard", 4096), ("advanced", 8192)])
def test_ssm_limit_at_the_boundary(services_env: ServicesEnv, aes_keyring: envelope.RawAesKeyring, tier: str,
                                   limit: int) -> None:
    largest = limit // 4 * 3  # 3,072 / 6,144 bytes are 4,096 / 8,192 characters of base64
    assert aws.max_message_size("ssm:/x", tier=tier) == largest
    fits = _message(aes_keyring, largest)
    aws.write_message(f"ssm:/fits/{tier}", fits, tier=tier)
    stored = services_env.ssm().get_parameter(Name=f"/fits/{tier}")["Parameter"]["Value"]
    assert len(stored) == limit
    tiers = services_env.ssm().describe_parameters(
        ParameterFilters=[{"Key": "Name", "Values": [f"/fits/{tier}"]}])["Parameters"]
    assert tiers[0]["Tier"] == tier.capitalize()
    one_more = _message(aes_keyring, largest + 1)  # one plaintext byte more
    with pytest.raises(envelope.StorageError, match=rf"at most {limit:,} characters.*s3://") as caught:
        aws.write_message(f"ssm:/over/{tier}", one_more, tier=tier)
    assert caught.value.code == aws.TOO_LARGE and caught.value.location == f"ssm:/over/{tier}"
    assert _missing(services_env, f"/over/{tier}")  # nothing was written


def test_ssm_standard_refusal_points_at_the_advanced_tier(aes_keyring: envelope.RawAesKeyring) -> None:
    with pytest.raises(envelope.StorageError, match="advanced tier holds 8,192"):
        aws.check_size("ssm:/x", 3073)
    aws.check_size("ssm:/x", 3073, tier="advanced")
    with pytest.raises(envelope.UsageError, match="SSM tier"):
        aws.check_size("ssm:/x", 10, tier="intelligent")


def test_secrets_manager_limit_at_the_boundary(services_env: ServicesEnv,
                                               aes_keyring: envelope.RawAesKeyring) -> None:
    fits = _message(aes_keyring, 65_536)
    aws.write_message("secretsmanager:fits", fits)
    assert len(services_env.secrets().get_secret_value(SecretId="fits")["SecretBinary"]) == 65_536
    one_more = _message(aes_keyring, 65_537)
    with pytest.raises(envelope.StorageError, match=r"at most 65,536 bytes.*s3://") as caught:
        aws.write_message("secretsmanager:over", one_more)
    assert caught.value.code == aws.TOO_LARGE
    assert services_env.secrets().list_secrets()["SecretList"][0]["Name"] == "fits"  # "over" never created
    assert len(services_env.secrets().list_secrets()["SecretList"]) == 1


def test_plaintext_value_limits(services_env: ServicesEnv) -> None:
    aws.write_value("ssm:/v/fits", b"a" * 4096)
    with pytest.raises(envelope.StorageError, match="4,097 bytes") as caught:
        aws.write_value("ssm:/v/over", b"a" * 4097)
    assert caught.value.code == aws.TOO_LARGE and _missing(services_env, "/v/over")
    with pytest.raises(envelope.StorageError, match="empty value"):
        aws.write_value("secretsmanager:empty", b"")


# ---------------------------------------------------------------------------------------------------------
# overwrite only with force; versions


def test_ssm_overwrite_needs_force_and_versions_are_readable(services_env: ServicesEnv,
                                                            aes_keyring: envelope.RawAesKeyring) -> None:
    first = envelope.encrypt(b"one", keyring=aes_keyring)
    second = envelope.encrypt(b"two", keyring=aes_keyring)
    aws.write_message("ssm:/app/v", first)
    assert aws.exists("ssm:/app/v") and not aws.exists("ssm:/app/none")
    with pytest.raises(envelope.StorageError, match="already exists") as caught:
        aws.write_message("ssm:/app/v", second)
    assert caught.value.code == aws.ALREADY_EXISTS
    assert aws.read_message("ssm:/app/v").data == first  # untouched
    assert aws.write_message("ssm:/app/v", second, force=True) == "2"
    assert aws.read_message("ssm:/app/v").data == second
    assert aws.read_message("ssm:/app/v:1").data == first
    assert aws.read_message("ssm:/app/v:2").data == second
    with pytest.raises(envelope.StorageError, match=r"ssm:/app/v:3 not found") as missing:
        aws.read_message("ssm:/app/v:3")
    assert missing.value.code == "ParameterVersionNotFound" and missing.value.code in aws.NOT_FOUND
    with pytest.raises(envelope.UsageError, match="can be read, not written"):
        aws.write_message("ssm:/app/v:1", first, force=True)


def test_ssm_labels_are_readable(services_env: ServicesEnv, aes_keyring: envelope.RawAesKeyring) -> None:
    message = envelope.encrypt(b"labelled", keyring=aes_keyring)
    aws.write_message("ssm:/app/l", message)
    aws.write_message("ssm:/app/l", envelope.encrypt(b"newer", keyring=aes_keyring), force=True)
    services_env.ssm().label_parameter_version(Name="/app/l", ParameterVersion=1, Labels=["stable"])
    assert aws.read_message("ssm:/app/l:stable").data == message


def test_secret_overwrite_needs_force_and_stages_are_readable(services_env: ServicesEnv,
                                                             aes_keyring: envelope.RawAesKeyring) -> None:
    first = envelope.encrypt(b"one", keyring=aes_keyring)
    second = envelope.encrypt(b"two", keyring=aes_keyring)
    first_version = aws.write_message("secretsmanager:app/v", first)
    with pytest.raises(envelope.StorageError, match="already exists") as caught:
        aws.write_message("secretsmanager:app/v", second)
    assert caught.value.code == aws.ALREADY_EXISTS
    assert aws.read_message("secretsmanager:app/v").data == first
    aws.write_message("secretsmanager:app/v", second, force=True)
    assert aws.read_message("secretsmanager:app/v").data == second
    previous = aws.parse_location("secretsmanager:app/v", version_stage="AWSPREVIOUS")
    assert aws.read_message(previous).data == first
    by_id = aws.parse_location("secretsmanager:app/v", version_id=first_version)
    assert aws.read_message(by_id).data == first
    arn = services_env.secrets().describe_secret(SecretId="app/v")["ARN"]
    with pytest.raises(envelope.StorageError, match="already exists"):
        aws.write_message(f"secretsmanager:{arn}", first)  # an ARN names a secret that exists


# ---------------------------------------------------------------------------------------------------------
# errors name the location, never a value


def test_not_found_names_the_location(services_env: ServicesEnv) -> None:
    with pytest.raises(envelope.StorageError, match=r"^ssm:/no/such not found \(ParameterNotFound\)") as caught:
        aws.read_message("ssm:/no/such")
    assert caught.value.location == "ssm:/no/such" and caught.value.code in aws.NOT_FOUND
    with pytest.raises(envelope.StorageError, match=r"^secretsmanager:nope not found") as secret:
        aws.read_message("secretsmanager:nope")
    assert secret.value.code == "ResourceNotFoundException"


@pytest.mark.parametrize("text", ["ssm:", "ssm:/bad name", "ssm:/a:b c", "secretsmanager:", "secretsmanager:a b",
                                  "ssm:arn:aws:ssm:us-east-1:1:parameter/x", "s3://b/k"])
def test_malformed_locations_are_usage_errors(text: str) -> None:
    with pytest.raises(envelope.UsageError):
        aws.parse_location(text)


def test_location_forms() -> None:
    loc = aws.parse_location("ssm:arn:aws:ssm:eu-west-1:123456789012:parameter/app/db:7")
    assert (loc.name, loc.version, loc.region) == ("arn:aws:ssm:eu-west-1:123456789012:parameter/app/db", 7,
                                                   "eu-west-1")
    assert str(aws.parse_location("ssm:/a/b:lbl")) == "ssm:/a/b:lbl"
    with pytest.raises(envelope.UsageError, match="secretsmanager: locations"):
        aws.parse_location("ssm:/a", version_stage="AWSCURRENT")


def test_unreachable_endpoint_is_a_storage_error(services_env: ServicesEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from aws_fixtures import refused_endpoint

    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", refused_endpoint())
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(envelope.StorageError, match="could not reach SSM Parameter Store") as caught:
        aws.read_message("ssm:/app/db")
    assert caught.value.code == "EndpointUnreachable"


# ---------------------------------------------------------------------------------------------------------
# key files kept in SSM / Secrets Manager


def _key_file() -> str:
    from envelope._keyrings.keyfile import generate_aes_key_file, key_file_text

    return key_file_text(generate_aes_key_file("envelope", "stored"))


def test_key_file_in_a_secure_string(services_env: ServicesEnv, aes_keyring: envelope.RawAesKeyring) -> None:
    text = _key_file()
    services_env.ssm().put_parameter(Name="/keys/app", Value=text, Type="SecureString")
    keyring = aws.load_keyring("ssm:/keys/app")
    message = envelope.encrypt(b"with a stored key", keyring=keyring)
    same = envelope.load_keyring  # the file form of the same key decrypts it
    assert same is not None
    assert envelope.decrypt(message, keyring=aws.load_keyring("ssm:/keys/app")).plaintext == b"with a stored key"
    assert json.loads(text)["name"] == "stored"


def test_key_file_in_a_string_parameter_is_refused(services_env: ServicesEnv) -> None:
    text = _key_file()
    services_env.ssm().put_parameter(Name="/keys/plain", Value=text, Type="String")
    with pytest.raises(envelope.KeyFileError, match="SecureString") as caught:
        aws.load_keyring("ssm:/keys/plain")
    assert json.loads(text)["key"] not in str(caught.value)


def test_key_file_in_a_secret_and_a_bad_one(services_env: ServicesEnv) -> None:
    services_env.secrets().create_secret(Name="keys/app", SecretString=_key_file())
    message = envelope.encrypt(b"x", keyring=aws.load_keyring("secretsmanager:keys/app"))
    assert envelope.decrypt(message, keyring=aws.load_keyring("secretsmanager:keys/app")).plaintext == b"x"
    services_env.secrets().create_secret(Name="keys/bad", SecretString="not json: s3cr3t")
    with pytest.raises(envelope.KeyFileError, match=r"secretsmanager:keys/bad: not a JSON key file") as caught:
        aws.load_keyring("secretsmanager:keys/bad")
    assert "s3cr3t" not in str(caught.value)


# ---------------------------------------------------------------------------------------------------------
# access denied, with a moto_server that enforces IAM (actions only: see the module docstring)


@pytest.fixture(scope="module")
def iam_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = separate_moto_server(tmp_path_factory.mktemp("moto-iam") / "moto.log",
                                  {"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        yield server
    finally:
        stop_moto_server(server)


@pytest.fixture
def denied_user(iam_moto: MotoServer, services_env: ServicesEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials (in the environment) of a user who may write parameters and secrets but not read them."""
    import boto3

    iam_moto.reset()
    setup = {"region_name": "us-east-1", "endpoint_url": iam_moto.url, "aws_access_key_id": "testing",
             "aws_secret_access_key": "testing"}
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="writer")
    key = iam.create_access_key(UserName="writer")["AccessKey"]
    iam.put_user_policy(UserName="writer", PolicyName="write-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["ssm:PutParameter", "secretsmanager:CreateSecret"],
                       "Resource": "*"}]}))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    for name in ("AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL_SECRETS_MANAGER"):
        monkeypatch.setenv(name, iam_moto.url)


@pytest.mark.usefixtures("denied_user")
def test_access_denied_names_the_parameter_or_secret(aes_keyring: envelope.RawAesKeyring) -> None:
    aws.write_message("ssm:/app/secret", envelope.encrypt(b"v", keyring=aes_keyring))
    aws.write_message("secretsmanager:app/secret", envelope.encrypt(b"v", keyring=aes_keyring))
    for location in ("ssm:/app/secret", "secretsmanager:app/secret"):
        with pytest.raises(envelope.StorageError, match=rf"^access denied: .* refused to read {location} ") as caught:
            aws.read_message(location)
        assert caught.value.location == location
        with pytest.raises(envelope.StorageError, match="access denied"):
            aws.load_keyring(location)


@pytest.mark.parametrize(("one", "other"), [
    ("ssm:/app/db", "ssm:app/db"),
    ("ssm:/app/db:3", "ssm:arn:aws:ssm:us-east-1:123456789012:parameter/app/db"),
    ("secretsmanager:app/db", "secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db-AbC123"),
    ("secretsmanager:app/db", "secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db"),
])
def test_one_parameter_or_secret_however_it_is_named(one: str, other: str) -> None:
    """Location.identity: what an output-overwrites-input check compares (names, ARNs, versions alike)."""
    assert aws.parse_location(one).identity == aws.parse_location(other).identity


@pytest.mark.parametrize(("one", "other"), [
    ("ssm:/app/db", "ssm:/app/db2"),
    ("ssm:/app/db", "secretsmanager:app/db"),
    ("secretsmanager:app/db-AbC123", "secretsmanager:app/db-XyZ789"),  # a name, not an ARN: no suffix to drop
])
def test_different_parameters_and_secrets_differ(one: str, other: str) -> None:
    assert aws.parse_location(one).identity != aws.parse_location(other).identity
