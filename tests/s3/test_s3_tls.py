"""S3Writer over HTTPS, where botocore sends parts as aws-chunked bodies with a trailing CRC32: parts go as a
seekable file over the part buffer (no whole-part copy), and a part whose first attempt was read and then
refused is rewound and sent again whole. Against a moto_server with a self-signed certificate (AWS_CA_BUNDLE)."""

from __future__ import annotations

import datetime
import io
import ipaddress
import os
import random
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from shutil import which
from typing import Any

import pytest

import envelope
import envelope.s3 as s3

MIB = 1024 * 1024
BUCKET = "envelope-tls"


def _certificate(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    exe = Path(sys.executable).with_name("moto_server")
    found = str(exe) if exe.exists() else which("moto_server")
    if found is None:
        pytest.fail("moto_server is not installed (pip install 'moto[server]')")
    folder = tmp_path_factory.mktemp("tls-moto")
    cert, key = _certificate(folder)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    with open(folder / "moto.log", "wb") as log:
        proc = subprocess.Popen([found, "-H", "127.0.0.1", "-p", str(port), "-c", str(cert), "-k", str(key)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1, context=context).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the TLS moto_server did not start: " + (folder / "moto.log").read_text()[-2000:])
                time.sleep(0.2)
        yield url, cert
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def tls_client(tls_moto: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> Any:
    url, cert = tls_moto
    for name, value in {"AWS_ENDPOINT_URL_S3": url, "AWS_CA_BUNDLE": str(cert), "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = s3.new_client()
    try:
        client.create_bucket(Bucket=BUCKET)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return client


def _refuse_first(client: Any, operation: str, times: int, seen: list[Any]) -> None:
    """The first ``times`` requests of ``operation`` have their body read to the end (as if sent), then are
    answered 503 SlowDown without reaching moto: botocore must rewind the body and send it again."""
    from botocore.awsrequest import AWSResponse

    body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    class _Raw:
        def stream(self, **kwargs: Any) -> Iterator[bytes]:
            yield body

        def read(self, *args: Any) -> bytes:
            return body

    left = {"n": times}

    def hook(request: Any, **kwargs: Any) -> Any:
        seen.append(request.body)
        if left["n"] > 0:
            left["n"] -= 1
            while request.body.read(64 * 1024):
                pass
            return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, _Raw())
        return None

    client.meta.events.register(f"before-send.s3.{operation}", hook)


def test_parts_over_https_are_rewound_and_sent_again(tls_client: Any, fast_throttle_backoff: None) -> None:
    data = os.urandom(3 * s3.MIN_PART_SIZE + 11)
    seen: list[Any] = []
    _refuse_first(tls_client, "UploadPart", 3, seen)
    writer = s3.S3Writer(f"s3://{BUCKET}/parts.bin", client=tls_client, part_size=s3.MIN_PART_SIZE, force=True)
    assert writer._file_body
    for at in range(0, len(data), 777_777):
        writer.write(data[at:at + 777_777])
    written = writer.commit()
    assert written.parts == 4
    assert len(seen) == 4 + 3  # every part once, and the three refused ones again
    # the aws-chunked body reads the part buffer through a _PartBody, not through a whole copy in a BytesIO
    assert all(isinstance(getattr(body, "_raw", None), s3._PartBody) for body in seen)
    stored = tls_client.get_object(Bucket=BUCKET, Key="parts.bin")["Body"].read()
    assert stored == data
    assert tls_client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_single_put_over_https_and_encrypt_object(tls_client: Any, fast_throttle_backoff: None) -> None:
    keyring = envelope.RawAesKeyring("ns", "k", os.urandom(32))
    seen: list[Any] = []
    _refuse_first(tls_client, "PutObject", 1, seen)
    small = os.urandom(100_000)
    s3.encrypt_object(io.BytesIO(small), f"s3://{BUCKET}/small.enc", keyring=keyring, client=tls_client,
                      force=True)
    assert len(seen) == 2 and isinstance(getattr(seen[0], "_raw", None), s3._PartBody)
    big = os.urandom(2 * s3.DEFAULT_PART_SIZE + 5)
    s3.encrypt_object(io.BytesIO(big), f"s3://{BUCKET}/big.enc", keyring=keyring, client=tls_client, force=True)
    for name, plaintext in (("small.enc", small), ("big.enc", big)):
        stored = tls_client.get_object(Bucket=BUCKET, Key=name)["Body"].read()
        assert envelope.decrypt(stored, keyring=keyring).plaintext == plaintext


def test_part_body_reads_like_a_bytes_file() -> None:
    """_PartBody against io.BytesIO over the same bytes: every read, readinto, seek and tell agrees."""
    rng = random.Random(13)
    data = bytearray(os.urandom(10_000))
    ours, ref = s3._PartBody(data), io.BytesIO(bytes(data))
    assert len(ours) == len(data)
    for _ in range(2000):
        op = rng.randrange(4)
        if op == 0:
            size = rng.choice([-1, None, 0, 1, rng.randrange(5000), 20_000])
            assert ours.read(size) == ref.read(size)
        elif op == 1:
            target = bytearray(rng.randrange(3000))
            expect = bytearray(len(target))
            assert ours.readinto(target) == ref.readinto(expect)
            assert target == expect
        elif op == 2:
            whence = rng.randrange(3)
            offset = rng.randrange(12_000) - (0 if whence == io.SEEK_SET else 6000)
            base = {io.SEEK_SET: 0, io.SEEK_CUR: ref.tell(), io.SEEK_END: len(data)}[whence]
            if base + offset >= 0:  # (a negative target is a ValueError for both)
                assert ours.seek(offset, whence) == ref.seek(offset, whence)
        assert ours.tell() == ref.tell()
    ours.release()
    del data[5000:]  # released: the buffer may be resized again
