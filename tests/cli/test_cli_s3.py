"""``s3://`` locations in the CLI (issue 13, "CLI"), over real HTTP against the tests' own moto_server.

In-process runs (typer's CliRunner) use the small-parts moto_server (``s3_env``: parts of 64 KiB accepted, and
``--part-size 65536`` allowed in this process and the worker processes it forks), mostly through the fault proxy,
which counts every S3 request by operation and the bytes moto answered. Subprocess runs cover what only a real
process shows (Ctrl-C and SIGTERM mid-upload) against the main moto_server, which keeps S3's real 5 MiB minimum.

Every failure is checked for its exit code, one ``envelope: error:`` line naming the ``s3://`` URL, and that no
object and no pending multipart upload was left (``ListMultipartUploads`` is empty).

moto and AWS differ here in ways these tests do not rely on: moto checks no SigV4 signatures, and its IAM
enforcement (a separate moto_server) checks actions only.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import (
    SMALL_PART_SIZE,
    AwsEnv,
    FaultProxy,
    MotoServer,
    iam_user,
    refused_endpoint,
    separate_moto_server,
    stop_moto_server,
)
from aws_fixtures import TEST_BUCKET as BUCKET
from cli_support import key_file
from helpers import esdk_aes_key, esdk_encrypt
from runner_support import ok, one_error_line, run

import envelope
import envelope.batch.s3_locations
from testkit.messages import flip_bit

pytestmark = pytest.mark.usefixtures("fast_cli")

PART = SMALL_PART_SIZE
PARTS = ["--part-size", str(PART)]
FRAME = 4096
CLI = [sys.executable, "-m", "envelope_cli.main"]
ROOT = Path(__file__).resolve().parents[2]
def url(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return key_file(tmp_path)


@pytest.fixture
def keyring(key: Path) -> envelope.Keyring:
    return envelope.load_keyring(str(key))


def get(s3_env: AwsEnv, key: str) -> bytes:
    return bytes(s3_env.s3().get_object(Bucket=BUCKET, Key=key)["Body"].read())


def put(s3_env: AwsEnv, key: str, data: bytes) -> None:
    s3_env.s3().put_object(Bucket=BUCKET, Key=key, Body=data)


def nothing_left(s3_env: AwsEnv, *keys: str) -> None:
    present = set(s3_env.object_keys(BUCKET))
    assert not present & set(keys), present & set(keys)
    assert s3_env.pending_uploads(BUCKET) == []


# ---------------------------------------------------------------------------------------------------------
# every combination of files, pipes and objects


SIZE = 3 * PART + 17  # a multipart upload of 4 parts with --part-size 65536


def _put_input(where: str, data: bytes, tmp_path: Path, s3_env: AwsEnv, name: str) -> tuple[list[str], bytes | None]:
    """INPUT arguments (and stdin) that hold ``data``."""
    if where == "file":
        path = tmp_path / name
        path.write_bytes(data)
        return [str(path)], None
    if where == "stdin":
        return [], data
    put(s3_env, f"in/{name}", data)
    return [url(f"in/{name}")], None


def _output(where: str, tmp_path: Path, name: str) -> list[str]:
    return {"file": ["-o", str(tmp_path / name)], "stdout": ["-o", "-"], "s3": ["-o", url(f"out/{name}")]}[where]


def _read_output(where: str, result: Any, tmp_path: Path, s3_env: AwsEnv, name: str) -> bytes:
    if where == "file":
        return (tmp_path / name).read_bytes()
    if where == "stdout":
        return bytes(result.stdout_bytes)
    return get(s3_env, f"out/{name}")


@pytest.mark.parametrize("source", ["file", "stdin", "s3"])
@pytest.mark.parametrize("destination", ["file", "stdout", "s3"])
def test_encrypt_and_decrypt_in_every_combination(tmp_path: Path, s3_env: AwsEnv, s3_proxy: FaultProxy, key: Path,
                                                  keyring: envelope.Keyring, source: str, destination: str) -> None:
    plaintext = os.urandom(SIZE)
    inputs, stdin = _put_input(source, plaintext, tmp_path, s3_env, "plain")
    result = ok("encrypt", *inputs, *_output(destination, tmp_path, "m.enc"), "-k", key, "-c", "app=s3",
                "--frame-size", str(FRAME), *PARTS, input=stdin)
    message = _read_output(destination, result, tmp_path, s3_env, "m.enc")
    assert envelope.decrypt(message, keyring=keyring, required_context={"app": "s3"}).plaintext == plaintext
    if destination == "s3":
        assert s3_proxy.calls("CompleteMultipartUpload") == 1  # several parts, completed once

    s3_proxy.reset_counts()
    inputs, stdin = _put_input(source, message, tmp_path, s3_env, "m2.enc")
    result = ok("decrypt", *inputs, *_output(destination, tmp_path, "back"), "-k", key, "-c", "app=s3", *PARTS,
                input=stdin)
    assert _read_output(destination, result, tmp_path, s3_env, "back") == plaintext
    if destination == "s3":
        assert s3_proxy.calls("CompleteMultipartUpload") == 1
    if destination == "file":
        assert (tmp_path / "back").stat().st_mode & 0o777 == 0o600  # decrypted files are private
    assert s3_env.pending_uploads(BUCKET) == []


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 3 * PART])
def test_sizes_around_the_part_size(tmp_path: Path, s3_env: AwsEnv, key: Path, size: int) -> None:
    """Output sizes around part boundaries (the message is a little larger than its plaintext)."""
    plaintext = os.urandom(size)
    (tmp_path / "p").write_bytes(plaintext)
    ok("encrypt", tmp_path / "p", "-o", url("p.enc"), "-k", key, "--frame-size", str(FRAME), *PARTS)
    ok("decrypt", url("p.enc"), "-o", url("p"), "-k", key, *PARTS)
    assert get(s3_env, "p") == plaintext
    ok("decrypt", url("p.enc"), "-o", tmp_path / "back", "-k", key)
    assert (tmp_path / "back").read_bytes() == plaintext


def test_names_beside_an_s3_input_follow_suffix(s3_env: AwsEnv, key: Path, keyring: envelope.Keyring) -> None:
    put(s3_env, "dir/report.csv", b"a,b\n1,2\n")
    ok("encrypt", url("dir/report.csv"), "-k", key)
    assert envelope.decrypt(get(s3_env, "dir/report.csv.encrypted"), keyring=keyring).plaintext == b"a,b\n1,2\n"
    ok("encrypt", url("dir/report.csv"), "-k", key, "--suffix", ".enc")
    s3_env.s3().delete_object(Bucket=BUCKET, Key="dir/report.csv")
    ok("decrypt", url("dir/report.csv.enc"), "-k", key, "--suffix", ".enc")
    assert get(s3_env, "dir/report.csv") == b"a,b\n1,2\n"
    ok("decrypt", url("dir/report.csv.encrypted"), "-o", url("plain/"), "-k", key)  # a prefix to write into
    assert get(s3_env, "plain/report.csv") == b"a,b\n1,2\n"


def test_metadata_and_verbose_name_the_objects(tmp_path: Path, s3_env: AwsEnv, key: Path) -> None:
    put(s3_env, "m/a", b"x" * 100)
    meta = tmp_path / "meta.jsonl"
    result = ok("encrypt", url("m/a"), "-o", url("m/a.enc"), "-k", key, "-v", "--metadata-output", meta)
    record = json.loads(meta.read_text())
    assert (record["input"], record["output"], record["bytes_in"]) == (url("m/a"), url("m/a.enc"), 100)
    assert f"wrote '{url('m/a.enc')}'" in result.stderr
    one_error_line(run("encrypt", url("m/a"), "-o", url("m/b.enc"), "-k", key, "--metadata-output", url("m.jsonl")),
                   2, "--metadata-output", "local file")


# ---------------------------------------------------------------------------------------------------------
# -r over prefixes


def _tree(count: int) -> dict[str, bytes]:
    return {f"d{i % 7}/sub{i % 3}/f{i:04d}.txt": f"object {i}\n".encode() * (1 + i % 5) for i in range(count)}


def test_recursive_paginated_prefix_into_a_folder_and_another_prefix(
        tmp_path: Path, s3_env: AwsEnv, s3_proxy: FaultProxy, key: Path, keyring: envelope.Keyring,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefix listed in 6 ListObjectsV2 pages, with 2 workers. The page size is lowered from S3's 1,000 to 7
    (moto takes ~10 ms per request: 1,001 objects would cost half a minute); the pages are real ones."""
    monkeypatch.setattr(envelope.batch.s3_locations, "LIST_PAGE_SIZE", 7)
    tree = _tree(40)
    setup = s3_env.s3()
    for rel, data in tree.items():
        setup.put_object(Bucket=BUCKET, Key=f"in/{rel}.encrypted", Body=envelope.encrypt(data, keyring=keyring))
    put(s3_env, "elsewhere/x.encrypted", envelope.encrypt(b"not below the prefix", keyring=keyring))

    ok("decrypt", "-r", url("in/"), "-o", tmp_path / "out", "-k", key, "--workers", "2")
    assert s3_proxy.calls("ListObjectsV2") == 6
    got = {str(p.relative_to(tmp_path / "out")): p.read_bytes() for p in (tmp_path / "out").rglob("*")
           if p.is_file()}
    assert got == tree

    s3_proxy.reset_counts()
    ok("decrypt", "-r", url("in"), "-o", url("plain/"), "-k", key, "--workers", "2")  # "in" means the prefix in/
    assert s3_proxy.calls("HeadObject") == 2 * len(tree)  # planning's, then the writer's, per output
    s3_proxy.reset_counts()
    ok("decrypt", "-r", url("in"), "-o", url("plain/"), "-k", key, "--workers", "2", "--force")
    assert s3_proxy.calls("ListObjectsV2") == 6 and s3_proxy.calls("HeadObject") == 0
    listed = {k[len("plain/"):] for k in s3_env.object_keys(BUCKET) if k.startswith("plain/")}
    assert listed == set(tree)
    for rel in sorted(tree)[::9]:
        assert get(s3_env, f"plain/{rel}") == tree[rel]
    assert s3_env.pending_uploads(BUCKET) == []


def test_local_folder_to_a_prefix_and_back_with_suffix(tmp_path: Path, s3_env: AwsEnv, key: Path) -> None:
    tree = _tree(25)
    for rel, data in tree.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(data)
    ok("encrypt", "-r", tmp_path / "src", "-o", url("enc"), "-k", key, "--suffix", ".e", "--workers", "2")
    assert sorted(k for k in s3_env.object_keys(BUCKET)) == sorted(f"enc/{rel}.e" for rel in tree)
    ok("decrypt", "-r", url("enc/"), "-o", url("dec/"), "-k", key, "--suffix", ".e")
    assert {k[len("dec/"):]: get(s3_env, k) for k in s3_env.object_keys(BUCKET) if k.startswith("dec/")} == tree
    ok("decrypt", "-r", url("enc/"), "-o", tmp_path / "back", "-k", key, "--suffix", ".e")
    assert {str(p.relative_to(tmp_path / "back")): p.read_bytes() for p in (tmp_path / "back").rglob("*")
            if p.is_file()} == tree


def test_recursive_refusals(tmp_path: Path, s3_env: AwsEnv, key: Path, keyring: envelope.Keyring) -> None:
    put(s3_env, "p/a.encrypted", envelope.encrypt(b"a", keyring=keyring))
    one_error_line(run("decrypt", url("p/"), "-k", key), 2, "names an S3 prefix", "add -r")
    put(s3_env, "bad/x/../y.encrypted", envelope.encrypt(b"y", keyring=keyring))
    one_error_line(run("decrypt", "-r", url("bad/"), "-o", tmp_path / "out", "-k", key), 2,
                   url("bad/x/../y.encrypted"), "'..'")
    assert not (tmp_path / "out").exists() and not (tmp_path / "y").exists()
    result = ok("decrypt", "-r", url("empty/"), "-o", tmp_path / "none", "-k", key)
    assert "no input files to process" in result.stderr


# ---------------------------------------------------------------------------------------------------------
# inspect and --range read only what they need


def test_inspect_fetches_only_the_header(s3_env: AwsEnv, s3_proxy: FaultProxy, keyring: envelope.Keyring) -> None:
    message = envelope.encrypt(os.urandom(4 * 1024 * 1024), keyring=keyring, context={"app": "inspect"},
                               frame_length=FRAME)
    put(s3_env, "big.enc", message)
    header, _, _ = envelope.read_header(io.BytesIO(message))
    assert len(header.raw) < 4096
    result = ok("inspect", url("big.enc"))
    shown = json.loads(result.stdout)
    assert shown["encryption_context"] == {"app": "inspect"}
    assert s3_proxy.calls("GetObject") == 1
    assert s3_proxy.response_bytes["GetObject"] <= 4096 < len(message)  # the first GET of 4 KiB holds the header
    assert s3_proxy.calls("HeadObject") == 0


def _slice(data: bytes, start: int, end: int | None) -> bytes:
    return data[start:None if end is None else end + 1]


PLAIN_FRAMES = 5
RANGES = [(0, 0), (10, 100), (FRAME - 3, FRAME + 3), (FRAME, 2 * FRAME - 1), (0, None), (FRAME * PLAIN_FRAMES, None),
          (FRAME * PLAIN_FRAMES + 100, FRAME * PLAIN_FRAMES + 122), (3 * FRAME + 1, None), (2 * FRAME, 10**9)]


@pytest.mark.parametrize("where", ["file", "s3"])
def test_range_is_the_slice_of_the_plaintext(tmp_path: Path, s3_env: AwsEnv, key: Path, keyring: envelope.Keyring,
                                            where: str) -> None:
    """Inside one frame, across frames, exactly one frame, the final frame, open-ended, past the end (clipped)."""
    plaintext = os.urandom(PLAIN_FRAMES * FRAME + 123)
    message = envelope.encrypt(plaintext, keyring=keyring, frame_length=FRAME)
    (tmp_path / "m.enc").write_bytes(message)
    put(s3_env, "m.enc", message)
    source = url("m.enc") if where == "s3" else str(tmp_path / "m.enc")
    for start, end in RANGES:
        text = f"{start}-" if end is None else f"{start}-{end}"
        assert ok("decrypt", source, "--range", text, "-k", key).stdout_bytes == _slice(plaintext, start, end), text
    ok("decrypt", source, "--range", "4000-4200", "-o", tmp_path / "part", "-k", key)
    assert (tmp_path / "part").read_bytes() == plaintext[4000:4201]
    ok("decrypt", source, "--range", "4000-", "-o", url("part"), "-k", key)
    assert get(s3_env, "part") == plaintext[4000:]
    for text in (f"{len(plaintext)}-", f"{len(plaintext) + 5}-{len(plaintext) + 10}"):  # wholly past the end
        one_error_line(run("decrypt", source, "--range", text, "-k", key), 2, "past the end")


def test_range_reads_only_the_frames_it_needs_from_s3(s3_env: AwsEnv, s3_proxy: FaultProxy, key: Path,
                                                      keyring: envelope.Keyring) -> None:
    plaintext = os.urandom(200 * FRAME)
    message = envelope.encrypt(plaintext, keyring=keyring, frame_length=FRAME)
    put(s3_env, "m.enc", message)
    start = 100 * FRAME + 10
    assert ok("decrypt", url("m.enc"), "--range", f"{start}-{start + 99}", "-k", key).stdout_bytes == \
        plaintext[start:start + 100]
    assert s3_proxy.response_bytes["GetObject"] <= 4096 + 2 * (FRAME + 32)  # the first GET and one frame
    assert len(message) > 50 * s3_proxy.response_bytes["GetObject"]


@pytest.mark.parametrize("where", ["file", "s3"])
def test_range_in_a_tampered_frame_fails_and_a_range_elsewhere_succeeds(
        tmp_path: Path, s3_env: AwsEnv, key: Path, keyring: envelope.Keyring, where: str) -> None:
    """By design the range is authenticated, not the whole message: frames outside it are not even read."""
    plaintext = os.urandom(6 * FRAME + 100)
    message = envelope.encrypt(plaintext, keyring=keyring, frame_length=FRAME)
    header_length = len(message) - 6 * (FRAME + 32) - (4 + 4 + 12 + 4 + 100 + 16)  # 6 regular frames, the final
    third = header_length + 2 * (FRAME + 32) + 4 + 12 + 100  # a ciphertext byte of frame 3
    bad = flip_bit(message, 8 * third)
    (tmp_path / "bad.enc").write_bytes(bad)
    put(s3_env, "bad.enc", bad)
    source = url("bad.enc") if where == "s3" else str(tmp_path / "bad.enc")
    result = run("decrypt", source, "--range", f"{2 * FRAME + 5}-{2 * FRAME + 50}", "-k", key)
    one_error_line(result, 1)
    assert result.stdout_bytes == b""
    one_error_line(run("decrypt", source, "--range", f"{FRAME}-{4 * FRAME}", "-o", tmp_path / "out", "-k", key), 1)
    assert not (tmp_path / "out").exists()
    one_error_line(run("decrypt", source, "--range", f"{FRAME}-{4 * FRAME}", "-o", url("out"), "-k", key, *PARTS),
                   1)
    nothing_left(s3_env, "out")
    assert ok("decrypt", source, "--range", f"0-{2 * FRAME - 1}", "-k", key).stdout_bytes == plaintext[:2 * FRAME]
    assert ok("decrypt", source, "--range", f"{4 * FRAME}-", "-k", key).stdout_bytes == plaintext[4 * FRAME:]
    one_error_line(run("decrypt", source, "-o", tmp_path / "whole", "-k", key), 1)  # the whole message: refused


def test_range_refusals(tmp_path: Path, s3_env: AwsEnv, key: Path, keyring: envelope.Keyring) -> None:
    signed = envelope.encrypt(b"x" * 10_000, keyring=keyring, algorithm=0x0578)
    put(s3_env, "signed.enc", signed)
    one_error_line(run("decrypt", url("signed.enc"), "--range", "0-9", "-k", key), 1, "signed suite",
                   "decrypt the whole message")
    unframed = esdk_encrypt(b"y" * 5000, esdk_aes_key("issue12", "k", bytes(range(32))), 0x0478, context={},
                            frame_length=0)
    (tmp_path / "unframed.enc").write_bytes(unframed)
    one_error_line(run("decrypt", tmp_path / "unframed.enc", "--range", "0-9", "-k", key), 1, "non-framed")
    piped = subprocess.run([*CLI, "decrypt", "--range", "0-9", "-k", str(key)], capture_output=True, timeout=60,
                           input=envelope.encrypt(b"z" * 100, keyring=keyring),
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (piped.returncode, piped.stdout) == (2, b"") and b"seekable" in piped.stderr  # a pipe cannot seek
    for text, words in [("9-3", "END is before START"), ("-5", "suffix ranges"), ("a-b", "START-END")]:
        one_error_line(run("decrypt", url("signed.enc"), "--range", text, "-k", key), 2, words)
    one_error_line(run("decrypt", "-r", url("x/"), "--range", "0-1", "-k", key), 2, "one INPUT")
    one_error_line(run("decrypt", url("signed.enc"), "--decode", "--range", "0-1", "-k", key), 2, "--decode")


# ---------------------------------------------------------------------------------------------------------
# atomic writes: failures leave no object and no pending upload


@pytest.mark.parametrize("size", [1000, 6 * PART], ids=["single-put", "multipart"])
def test_tampered_message_into_s3_leaves_nothing(tmp_path: Path, s3_env: AwsEnv, s3_proxy: FaultProxy, key: Path,
                                                 keyring: envelope.Keyring, size: int) -> None:
    message = envelope.encrypt(os.urandom(size), keyring=keyring, frame_length=FRAME)
    bad = flip_bit(message, 8 * len(message) - 1)  # the final frame's tag: every earlier frame verifies
    for source, stdin in ((url("bad.enc"), None), ("-", bad)):
        put(s3_env, "bad.enc", bad)
        s3_proxy.reset_counts()
        one_error_line(run("decrypt", source, "-o", url("bad.plain"), "-k", key, *PARTS, input=stdin), 1,
                       "final frame")
        if size > PART:
            assert s3_proxy.calls("UploadPart") >= 4  # plaintext of verified frames went out as parts ...
            assert s3_proxy.calls("AbortMultipartUpload") >= 1  # ... and was thrown away
        assert s3_proxy.calls("CompleteMultipartUpload") == s3_proxy.calls("PutObject") == 0
        nothing_left(s3_env, "bad.plain")


def test_an_upload_part_that_fails_is_retried_or_the_upload_aborted(
        tmp_path: Path, s3_env: AwsEnv, s3_proxy: FaultProxy, key: Path) -> None:
    plaintext = os.urandom(5 * PART)
    (tmp_path / "p").write_bytes(plaintext)
    s3_proxy.fail("UploadPart", times=2, status=500, code="InternalError")  # botocore retries: the upload goes on
    ok("encrypt", tmp_path / "p", "-o", url("retried.enc"), "-k", key, *PARTS)
    assert s3_proxy.failed["UploadPart"] == 2
    ok("decrypt", url("retried.enc"), "-o", tmp_path / "back", "-k", key)
    assert (tmp_path / "back").read_bytes() == plaintext

    s3_proxy.fail("UploadPart", times=None, status=500, code="InternalError")  # every attempt fails: abort
    one_error_line(run("encrypt", tmp_path / "p", "-o", url("failed.enc"), "-k", key, *PARTS), 4,
                   url("failed.enc"), "UploadPart")
    assert s3_proxy.calls("AbortMultipartUpload") >= 1
    nothing_left(s3_env, "failed.enc")


def test_an_existing_object_is_not_replaced_without_force(tmp_path: Path, s3_env: AwsEnv, key: Path,
                                                          keyring: envelope.Keyring) -> None:
    put(s3_env, "taken", b"the previous object")
    (tmp_path / "p").write_bytes(b"new")
    one_error_line(run("encrypt", tmp_path / "p", "-o", url("taken"), "-k", key), 2, url("taken"), "--force")
    assert get(s3_env, "taken") == b"the previous object"
    ok("encrypt", tmp_path / "p", "-o", url("taken"), "-k", key, "--force")
    assert envelope.decrypt(get(s3_env, "taken"), keyring=keyring).plaintext == b"new"
    one_error_line(run("decrypt", url("taken"), "-o", url("taken"), "-k", key, "--force"), 2,
                   "overwritten by its own output")
    put(s3_env, "a/x", b"1")
    (tmp_path / "x").write_bytes(b"2")
    one_error_line(run("encrypt", url("a/x"), tmp_path / "x", "-o", url("out/"), "-k", key), 2, "both be written")
    assert envelope.decrypt(get(s3_env, "taken"), keyring=keyring).plaintext == b"new"


def test_an_existing_object_is_refused_by_the_conditional_write(tmp_path: Path, s3_env: AwsEnv, s3_proxy: FaultProxy,
                                                                key: Path) -> None:
    """An object created after planning looked (here: planning's HEAD is answered 404 by the s3_proxy, as if the
    object were created a moment later) is not replaced: the write is conditional (If-None-Match: *); moto
    answers 412 as S3 does."""
    put(s3_env, "raced", b"created meanwhile")
    (tmp_path / "p").write_bytes(b"new")
    s3_proxy.fail("HeadObject", times=None, status=404, code="NotFound")
    one_error_line(run("encrypt", tmp_path / "p", "-o", url("raced"), "-k", key), 4, url("raced"), "exists already")
    assert get(s3_env, "raced") == b"created meanwhile"
    assert s3_env.pending_uploads(BUCKET) == []


# ---------------------------------------------------------------------------------------------------------
# errors: exit 4, one line naming the URL


def test_errors_name_the_url(tmp_path: Path, s3_env: AwsEnv, key: Path, keyring: envelope.Keyring,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p").write_bytes(b"data")
    one_error_line(run("decrypt", "s3://no-such-bucket/x.enc", "-o", tmp_path / "x", "-k", key), 4,
                   "s3://no-such-bucket/x.enc", "no such")
    one_error_line(run("decrypt", url("missing.enc"), "-o", tmp_path / "x", "-k", key), 4, url("missing.enc"),
                   "no such object")
    one_error_line(run("decrypt", "-r", "s3://no-such-bucket/in/", "-o", tmp_path / "x", "-k", key), 4,
                   "s3://no-such-bucket/in/", "bucket does not exist")
    one_error_line(run("encrypt", tmp_path / "p", "-o", "s3://no-such-bucket/x", "-k", key), 4,
                   "s3://no-such-bucket/x", "bucket does not exist")
    one_error_line(run("inspect", url("missing.enc")), 4, url("missing.enc"))
    for bad in ("s3://", "s3://a/x", "s3://bad_bucket!/x"):
        one_error_line(run("encrypt", tmp_path / "p", "-o", bad, "-k", key), 2, "malformed S3 URL")
    one_error_line(run("decrypt", "s3:///key", "-k", key), 2, "malformed S3 URL")
    one_error_line(run("encrypt", tmp_path / "p", "-o", url("x"), "-k", key, "--part-size", "4KiB"), 2,
                   "--part-size")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", refused_endpoint())
    one_error_line(run("decrypt", url("m.enc"), "-o", tmp_path / "x", "-k", key), 4, url("m.enc"), "could not reach")
    assert not (tmp_path / "x").exists()


def test_part_size_is_at_least_s3s_minimum(tmp_path: Path, key: Path) -> None:
    """Without the tests' lowered floor: S3's own 5 MiB minimum (refused before any request)."""
    (tmp_path / "p").write_bytes(b"data")
    for text in ("4MiB", "5242879", "6GiB", "8 parsecs"):
        one_error_line(run("encrypt", tmp_path / "p", "-o", url("x"), "-k", key, "--part-size", text), 2,
                       f"--part-size {text!r}")


@pytest.mark.usefixtures("fast_throttle_backoff")
def test_throttled_exits_4_naming_the_url(tmp_path: Path, s3_env: AwsEnv, s3_proxy: FaultProxy, key: Path,
                                          keyring: envelope.Keyring) -> None:
    put(s3_env, "m.enc", envelope.encrypt(b"data", keyring=keyring))
    (tmp_path / "p").write_bytes(b"data")
    s3_proxy.throttle_share = 1.0
    one_error_line(run("decrypt", url("m.enc"), "-o", tmp_path / "x", "-k", key), 4, url("m.enc"), "throttled",
                   "after 5 attempts")
    one_error_line(run("encrypt", tmp_path / "p", "-o", url("new"), "-k", key, "--force"), 4, url("new"), "throttled")
    s3_proxy.throttle_share = 0.5  # every second request: botocore's retries get through
    ok("decrypt", url("m.enc"), "-o", tmp_path / "x", "-k", key)
    assert (tmp_path / "x").read_bytes() == b"data"


@pytest.fixture(scope="module")
def iam_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto_server enforcing IAM after its first 5 requests (the set-up below; it checks actions only)."""
    server = separate_moto_server(tmp_path_factory.mktemp("moto-iam-s3") / "moto.log",
                                  {"INITIAL_NO_AUTH_ACTION_COUNT": "5"})
    try:
        yield server
    finally:
        stop_moto_server(server)


def test_access_denied_names_the_url(tmp_path: Path, aws_env: AwsEnv, iam_moto: MotoServer, key: Path,
                                     keyring: envelope.Keyring, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    iam_moto.reset()
    # IAM authorizes ListObjectsV2 as s3:ListBucket; moto 5.2.x checks the operation's own name instead
    # (s3:ListObjectsV2), older moto the IAM name: grant both, so the test allows listing on either.
    key_id, secret = iam_user(iam_moto, "lister", ["s3:ListBucket", "s3:ListObjectsV2"])
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=iam_moto.url, aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket="locked")
    s3.put_object(Bucket="locked", Key="m.enc", Body=envelope.encrypt(b"secret", keyring=keyring))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", iam_moto.url)
    one_error_line(run("decrypt", "s3://locked/m.enc", "-o", tmp_path / "x", "-k", key), 4, "s3://locked/m.enc",
                   "access denied")
    one_error_line(run("decrypt", "-r", "s3://locked/", "-o", tmp_path / "d", "-k", key), 4, "s3://locked/m.enc",
                   "access denied")  # listing is allowed, reading the object is not
    (tmp_path / "p").write_bytes(b"data")
    one_error_line(run("encrypt", tmp_path / "p", "-o", "s3://locked/new", "-k", key), 4, "s3://locked/new",
                   "access denied")
    assert not (tmp_path / "x").exists() and not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------------------------------------
# interop, exec


def test_esdk_message_uploaded_to_s3_decrypts_whole_and_by_range(tmp_path: Path, s3_env: AwsEnv, key: Path) -> None:
    plaintext = os.urandom(40 * FRAME + 77)
    message = esdk_encrypt(plaintext, esdk_aes_key("issue12", "k", bytes(range(32))), 0x0478,
                           context={"app": "esdk"}, frame_length=FRAME)
    s3_env.s3().upload_fileobj(io.BytesIO(message), BUCKET, "esdk.enc")  # boto3's own transfer
    assert ok("decrypt", url("esdk.enc"), "-o", "-", "-k", key, "-c", "app=esdk").stdout_bytes == plaintext
    ok("decrypt", url("esdk.enc"), "-o", url("esdk.plain"), "-k", key, *PARTS)
    assert get(s3_env, "esdk.plain") == plaintext
    for start, end in [(0, 9), (FRAME - 1, 3 * FRAME), (39 * FRAME, None)]:
        text = f"{start}-" if end is None else f"{start}-{end}"
        assert ok("decrypt", url("esdk.enc"), "--range", text, "-k", key, "-c", "app=esdk").stdout_bytes == \
            _slice(plaintext, start, end)


def test_exec_reads_an_s3_bundle(tmp_path: Path, s3_env: AwsEnv, key: Path, keyring: envelope.Keyring) -> None:
    put(s3_env, "app.s3_env.enc", envelope.encrypt(b"DB_PASSWORD=hunter2\nMODE=s3\n", keyring=keyring))
    put(s3_env, "tampered.enc", flip_bit(envelope.encrypt(b"MODE=x\n", keyring=keyring), -8 * 20))
    child = ["--", sys.executable, "-c", "import os; print(os.environ['DB_PASSWORD'], os.environ['MODE'])"]
    result = subprocess.run([*CLI, "exec", "-k", str(key), url("app.s3_env.enc"), *child], capture_output=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (result.returncode, result.stdout, result.stderr) == (0, b"hunter2 s3\n", b"")
    result = subprocess.run([*CLI, "exec", "-k", str(key), url("app.s3_env.enc"), url("tampered.enc"), *child],
                            capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1 and result.stdout == b""  # nothing runs
    result = subprocess.run([*CLI, "exec", "-k", str(key), url("none.enc"), *child], capture_output=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 4 and url("none.enc").encode() in result.stderr


# ---------------------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM mid-upload: a real process, S3's real 5 MiB minimum part size


def _wait_for_parts(s3_env: AwsEnv, bucket: str, parts: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else b""
        for upload in s3_env.pending_uploads(bucket):
            found = s3_env.s3().list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            if len(found.get("Parts", [])) >= parts:
                return
        time.sleep(0.05)
    pytest.fail("no upload with parts appeared within 60 s")


@pytest.fixture
def big_bucket(aws_env: AwsEnv) -> str:
    return aws_env.create_bucket("envelope-signals")


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated by SIGTERM")])
def test_signal_mid_upload_from_a_pipe_leaves_nothing(tmp_path: Path, aws_env: AwsEnv, big_bucket: str, key: Path,
                                                      signum: int, code: int, word: str) -> None:
    """The CLI reads stdin (held open) and has uploaded parts: the signal aborts the upload."""
    process = subprocess.Popen([*CLI, "encrypt", "-o", f"s3://{big_bucket}/piped.enc", "-k", str(key),
                                "--part-size", "5MiB"], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write(os.urandom(12 * 1024 * 1024))
    process.stdin.flush()
    _wait_for_parts(aws_env, big_bucket, 1, process)
    process.send_signal(signum)
    assert process.wait(60) == code
    lines = process.stderr.read().decode().splitlines()
    assert lines == [f"envelope: error: {word}; temporary files were removed and uploads aborted"]
    process.stdin.close()
    assert aws_env.pending_uploads(big_bucket) == [] and aws_env.object_keys(big_bucket) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_signal_while_parts_are_uploading_leaves_nothing(tmp_path: Path, aws_env: AwsEnv, big_bucket: str,
                                                         key: Path, workers: int) -> None:
    """Local files (read as fast as the disk allows) into S3: the signal comes while the main thread (or each
    worker process) is writing, so the writer fails with 'Aborted' there; the run still prints one line."""
    inputs = []
    for i in range(workers):
        inputs.append(tmp_path / f"big{i}")
        inputs[-1].write_bytes(os.urandom(40 * 1024 * 1024))
    out = ["-o", f"s3://{big_bucket}/out/" if workers > 1 else f"s3://{big_bucket}/big.enc"]
    process = subprocess.Popen([*CLI, "encrypt", *map(str, inputs), *out, "-k", str(key), "--part-size", "5MiB",
                                "--workers", str(workers)], stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    _wait_for_parts(aws_env, big_bucket, 1, process)
    process.send_signal(signal.SIGINT)
    assert process.wait(120) == 130
    assert process.stderr is not None
    lines = process.stderr.read().decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("envelope: error: interrupted; temporary files were removed"), \
        lines
    assert aws_env.pending_uploads(big_bucket) == [] and aws_env.object_keys(big_bucket) == []


# ---------------------------------------------------------------------------------------------------------
# rewrap (issue 15) through the same location kinds


def test_rewrap_from_s3_to_s3_object_and_prefix(tmp_path: Path, s3_env: AwsEnv, key: Path,
                                                keyring: envelope.Keyring) -> None:
    """``envelope rewrap`` reads and writes every location kind the registry knows: an object, and -r over a
    prefix into another prefix. The result opens with the new key only, to the same plaintext."""
    new = tmp_path / "new.key"
    ok("keygen", "-o", new, "--name", "new")
    new_keyring = envelope.load_keyring(str(new))
    plain = os.urandom(3 * PART + 5)
    put(s3_env, "old/a.bin", envelope.encrypt(plain, keyring=keyring, frame_length=FRAME))
    put(s3_env, "old/sub/b.bin", envelope.encrypt(plain[:100], keyring=keyring, algorithm="0x0578"))
    ok("rewrap", url("old/a.bin"), "-o", url("new/a.bin"), "--old-key", key, "-k", new, *PARTS)
    assert envelope.decrypt(get(s3_env, "new/a.bin"), keyring=new_keyring).plaintext == plain
    with pytest.raises(envelope.KeyringError):
        envelope.decrypt(get(s3_env, "new/a.bin"), keyring=keyring)
    ok("rewrap", "-r", url("old/"), "-o", url("again/"), "--old-key", key, "-k", new, *PARTS)
    assert envelope.decrypt(get(s3_env, "again/a.bin"), keyring=new_keyring).plaintext == plain
    assert envelope.decrypt(get(s3_env, "again/sub/b.bin"), keyring=new_keyring).plaintext == plain[:100]
    nothing_left(s3_env, "again/missing")
