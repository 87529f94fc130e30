"""Writes to S3 are atomic: on a tampered message, a failed part, a failed commit, Ctrl-C or SIGTERM there is no
object and no pending multipart upload (ListMultipartUploads is empty), over real HTTP against moto_server."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aws_fixtures import SMALL_PART_SIZE, AwsEnv, FaultProxy
from aws_fixtures import TEST_BUCKET as BUCKET

import envelope
import envelope.s3 as s3
from testkit.messages import flip_bit

PART = SMALL_PART_SIZE
FRAME = 4096


@pytest.fixture
def env(s3_env: AwsEnv) -> AwsEnv:
    return s3_env


@pytest.fixture
def proxy(s3_proxy: FaultProxy) -> FaultProxy:
    return s3_proxy


@pytest.fixture
def keyring() -> envelope.RawAesKeyring:
    return envelope.RawAesKeyring("ns", "k", os.urandom(32))


def _nothing_left(env: AwsEnv, key: str) -> None:
    assert key not in env.object_keys(BUCKET)
    assert env.pending_uploads(BUCKET) == []


@pytest.mark.parametrize("size", [1000, 6 * PART], ids=["single-put", "multipart"])
def test_tampered_message_into_s3_leaves_nothing(env: AwsEnv, proxy: FaultProxy, keyring: envelope.Keyring,
                                                 size: int) -> None:
    """The last frame is changed: every earlier frame verifies and is uploaded as parts, then the final frame
    fails, and the upload is aborted."""
    message = envelope.encrypt(os.urandom(size), keyring=keyring, frame_length=FRAME)
    env.s3().put_object(Bucket=BUCKET, Key="bad.enc", Body=flip_bit(message, 8 * len(message) - 1))  # the final tag
    with pytest.raises(envelope.AuthenticationError, match="final frame"):
        s3.decrypt_object(f"s3://{BUCKET}/bad.enc", f"s3://{BUCKET}/bad.plain", keyring=keyring, part_size=PART)
    if size > PART:
        assert proxy.calls("UploadPart") >= 4  # plaintext of verified frames went out as parts ...
        assert proxy.calls("AbortMultipartUpload") >= 1  # ... and was thrown away
    assert proxy.calls("CompleteMultipartUpload") == 0
    assert proxy.calls("PutObject") == 0
    _nothing_left(env, "bad.plain")


def test_truncated_message_into_s3_leaves_nothing(env: AwsEnv, keyring: envelope.Keyring) -> None:
    message = envelope.encrypt(os.urandom(6 * PART), keyring=keyring, frame_length=FRAME)
    env.s3().put_object(Bucket=BUCKET, Key="cut.enc", Body=message[:-100])
    with pytest.raises(envelope.TruncatedError):
        s3.decrypt_object(f"s3://{BUCKET}/cut.enc", f"s3://{BUCKET}/cut.plain", keyring=keyring, part_size=PART)
    _nothing_left(env, "cut.plain")


def test_wrong_key_into_s3_leaves_nothing(env: AwsEnv, keyring: envelope.Keyring) -> None:
    message = envelope.encrypt(os.urandom(100), keyring=keyring)
    env.s3().put_object(Bucket=BUCKET, Key="m.enc", Body=message)
    with pytest.raises(envelope.KeyringError):
        s3.decrypt_object(f"s3://{BUCKET}/m.enc", f"s3://{BUCKET}/m.plain",
                          keyring=envelope.RawAesKeyring("ns", "k", os.urandom(32)))
    _nothing_left(env, "m.plain")


def test_failed_upload_parts_are_retried(env: AwsEnv, proxy: FaultProxy, keyring: envelope.Keyring) -> None:
    """Two UploadPart requests answered 500 InternalError: botocore's standard retry sends them again."""
    plaintext = os.urandom(5 * PART)
    proxy.fail("UploadPart", 2)
    s3.encrypt_object(io.BytesIO(plaintext), f"s3://{BUCKET}/retried.enc", keyring=keyring, part_size=PART)
    assert proxy.failed["UploadPart"] == 2
    assert proxy.calls("UploadPart") == 6  # 5 MiB of plaintext + the header and frame overhead: 6 parts
    stored = env.s3().get_object(Bucket=BUCKET, Key="retried.enc")["Body"].read()
    assert envelope.decrypt(stored, keyring=keyring).plaintext == plaintext
    assert env.pending_uploads(BUCKET) == []


def test_upload_part_that_keeps_failing_aborts(env: AwsEnv, proxy: FaultProxy, keyring: envelope.Keyring,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    proxy.fail("UploadPart", None, status=503, code="ServiceUnavailable")
    with pytest.raises(envelope.StorageError, match=rf"cannot upload part \d+ of s3://{BUCKET}/failed.enc: "
                                                    r"S3 refused UploadPart after 2 attempts") as info:
        s3.encrypt_object(io.BytesIO(os.urandom(5 * PART)), f"s3://{BUCKET}/failed.enc", keyring=keyring,
                          part_size=PART)
    assert info.value.location == f"s3://{BUCKET}/failed.enc"
    assert proxy.calls("AbortMultipartUpload") >= 1
    assert proxy.calls("CompleteMultipartUpload") == 0
    _nothing_left(env, "failed.enc")


def test_failed_complete_aborts(env: AwsEnv, proxy: FaultProxy, keyring: envelope.Keyring,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    proxy.fail("CompleteMultipartUpload", None, status=500, code="InternalError")
    with pytest.raises(envelope.StorageError, match="CompleteMultipartUpload"):
        s3.encrypt_object(io.BytesIO(os.urandom(3 * PART)), f"s3://{BUCKET}/c.enc", keyring=keyring,
                          part_size=PART)
    assert proxy.calls("AbortMultipartUpload") >= 1
    _nothing_left(env, "c.enc")


def test_failed_abort_is_reported(env: AwsEnv, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """When even the abort fails, the error says the upload is still pending (and abort_error keeps why)."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    proxy.fail("UploadPart", None)
    proxy.fail("AbortMultipartUpload", None)
    writer = s3.S3Writer(f"s3://{BUCKET}/stuck", part_size=PART)
    with pytest.raises(envelope.StorageError, match="could not be aborted, so it is still pending"):
        for _ in range(4):
            writer.write(os.urandom(PART))
    assert writer.abort_error is not None
    assert len(env.pending_uploads(BUCKET)) == 1  # true: moto still holds it (the test cleans up below)
    proxy.fail("AbortMultipartUpload", 0)
    for upload in env.pending_uploads(BUCKET):
        env.s3().abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])


def test_abort_all_uploads_stops_every_open_writer(env: AwsEnv) -> None:
    """The signal hook, called in-process: it aborts open writers (pending parts included) and leaves
    committed objects alone. refuse_new=False so that the rest of the test session can still write."""
    done = s3.S3Writer(f"s3://{BUCKET}/done", part_size=PART)
    done.write(b"finished")
    done.commit()
    writers = [s3.S3Writer(f"s3://{BUCKET}/open-{i}", part_size=PART) for i in range(2)]
    for w in writers:
        w.write(os.urandom(3 * PART))
    assert len(env.pending_uploads(BUCKET)) == 2
    assert s3.abort_all_uploads(refuse_new=False) == 2
    assert env.pending_uploads(BUCKET) == []
    assert env.object_keys(BUCKET) == ["done"]
    assert all(w.closed for w in writers)


# ---------------------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM in a process that is uploading

_SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading
    import envelope, envelope.s3 as s3

    part = int(os.environ["TEST_PART_SIZE"])
    s3.MIN_PART_SIZE = part  # the test's moto_server accepts small parts
    if sys.argv[1] == "watcher":
        # the CLI's way (envelope_cli/signals.py): signals blocked in every thread, one thread takes them,
        # aborts the uploads through the library's hook, and ends the process
        wanted = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, wanted)

        def watch():
            signum = signal.sigwait(wanted)
            count = s3.abort_all_uploads()
            sys.stderr.write(f"aborted {count} upload(s)\\n")
            sys.stderr.flush()
            os._exit(128 + signum)

        threading.Thread(target=watch, daemon=True).start()
    keyring = envelope.RawAesKeyring("ns", "k", bytes(32))
    try:
        s3.encrypt_object(sys.stdin.buffer, sys.argv[2], keyring=keyring, part_size=part, frame_length=4096)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\\n")
        sys.exit(130)
    except envelope.StorageError:
        if s3.uploads_stopped():  # the watcher is ending the process: let it report the signal
            threading.Event().wait(60)
        raise
    print("finished")
""")


@pytest.mark.parametrize(("mode", "signum", "code"), [("default", signal.SIGINT, 130),
                                                      ("watcher", signal.SIGTERM, 128 + signal.SIGTERM),
                                                      ("watcher", signal.SIGINT, 128 + signal.SIGINT)])
def test_signal_mid_upload_leaves_nothing(env: AwsEnv, tmp_path: Path, mode: str, signum: int, code: int) -> None:
    script = tmp_path / "upload.py"
    script.write_text(_SCRIPT)
    url = f"s3://{BUCKET}/interrupted.enc"
    child = subprocess.Popen([sys.executable, str(script), mode, url], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "TEST_PART_SIZE": str(PART)})
    assert child.stdin is not None
    try:
        # more than one 4 MiB batch of the frame engine, so that parts are uploaded; then the input stalls
        child.stdin.write(os.urandom(5 * 1024 * 1024))
        child.stdin.flush()
        deadline = time.monotonic() + 60
        parts = 0
        while time.monotonic() < deadline and child.poll() is None:
            uploads = env.pending_uploads(BUCKET)
            if uploads:
                parts = len(env.s3().list_parts(Bucket=BUCKET, Key=uploads[0]["Key"],
                                                UploadId=uploads[0]["UploadId"]).get("Parts", []))
                if parts >= 3:
                    break
            time.sleep(0.05)
        assert parts >= 3, "the upload never got going"
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == code, stderr.decode(errors="replace")[-2000:]
    if mode == "watcher":
        assert b"aborted 1 upload(s)" in stderr
    else:
        assert b"interrupted" in stderr
    _nothing_left(env, "interrupted.enc")
