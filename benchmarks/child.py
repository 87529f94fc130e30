"""Measured operations, each run in a fresh child process: ``python -m benchmarks.child OP --spec JSON``.

A fresh process per run keeps one tool's memory and imports out of the next run and gives every run its own
peak RSS. The child times only the operation itself (imports and key set-up excluded), then writes one JSON
object to ``--result``. When the data go through stdin/stdout (pipe runs) the parent times the whole
pipeline instead.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from .small_group import small_child

CONTEXT = {"purpose": "benchmark"}
#: The ESDK stream is read in chunks of max(frame length, 32 KiB), the fastest way measured here of four
#: (iterating the stream, which yields 8 KiB lines; reads of one frame; of 8 frames; of 1 MiB). With 1 MiB
#: frames, reads of one frame were about 5x faster than iterating; with 4 KiB frames, 32 KiB reads were about
#: 1.3x faster. The peer gets its best showing.
ESDK_MIN_READ = 32 * 1024

Spec = dict[str, Any]


def _open_in(path: str) -> BinaryIO:
    return sys.stdin.buffer if path == "-" else open(path, "rb")


def _open_out(path: str) -> BinaryIO:
    return sys.stdout.buffer if path == "-" else open(path, "wb")


def _close(f: BinaryIO) -> None:
    if f in (sys.stdin.buffer, sys.stdout.buffer):
        f.flush()
    else:
        f.close()


def _raw_key(spec: Spec) -> tuple[str, str, bytes]:
    with open(spec["key"], "rb") as f:
        doc = json.load(f)
    return doc["namespace"], doc["name"], base64.b64decode(doc["key"])


# ---------------------------------------------------------------------------------------------------------
# envelope library


def envelope_stream(spec: Spec) -> dict[str, Any]:
    import envelope

    keyring = envelope.load_keyring(spec["key"])
    src, dst = _open_in(spec["input"]), _open_out(spec["output"])
    start = time.perf_counter()
    if spec["op"] == "encrypt":
        result: Any = envelope.encrypt_stream(src, dst, keyring=keyring, context=CONTEXT,
                                              algorithm=spec.get("suite"), frame_length=spec.get("frame"))
    elif spec["op"] == "rewrap":  # issue 15: the data key wrapped by new_key, the body copied unchanged
        result = envelope.rewrap_stream(src, dst, old=keyring, new=envelope.load_keyring(spec["new_key"]),
                                        verify=spec.get("verify"))
    else:
        result = envelope.decrypt_stream(src, dst, keyring=keyring)
    _close(dst)
    seconds = time.perf_counter() - start
    _close(src)
    return {"seconds": seconds, "bytes_in": result.bytes_read, "bytes_out": result.bytes_written}


# ---------------------------------------------------------------------------------------------------------
# aws-encryption-sdk library


def _esdk_client_and_key(spec: Spec) -> tuple[Any, Any]:
    import aws_encryption_sdk
    from aws_encryption_sdk.identifiers import CommitmentPolicy, EncryptionKeyType, WrappingAlgorithm
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKey

    namespace, name, key = _raw_key(spec)
    wrapping = WrappingKey(wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                           wrapping_key=key, wrapping_key_type=EncryptionKeyType.SYMMETRIC)
    master_key = RawMasterKey(provider_id=namespace, key_id=name.encode(), wrapping_key=wrapping)
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    return client, master_key


def _esdk_algorithm(suite: int | None) -> Any:
    from aws_encryption_sdk.identifiers import Algorithm

    return Algorithm.get_by_id(suite if suite is not None else 0x0478)


def esdk_stream(spec: Spec) -> dict[str, Any]:
    client, master_key = _esdk_client_and_key(spec)
    src, dst = _open_in(spec["input"]), _open_out(spec["output"])
    start = time.perf_counter()
    if spec["op"] == "encrypt":
        stream = client.stream(mode="e", source=src, key_provider=master_key, encryption_context=CONTEXT,
                               algorithm=_esdk_algorithm(spec.get("suite")), frame_length=spec["frame"])
    else:
        stream = client.stream(mode="d", source=src, key_provider=master_key)
    written = 0
    read_size = max(int(spec["frame"]), ESDK_MIN_READ)
    with stream:
        while True:
            chunk = stream.read(read_size)
            if not chunk:
                break
            dst.write(chunk)
            written += len(chunk)
    _close(dst)
    seconds = time.perf_counter() - start
    _close(src)
    return {"seconds": seconds, "bytes_out": written}


# ---------------------------------------------------------------------------------------------------------
# bare AES-GCM loops: the same frame sizes as envelope, no message format


def _frame_aad(seq: int, length: int) -> bytes:
    # about the size of a real frame's AAD (message id, body string, sequence number, length)
    return b"\x00" * 32 + b"AWSKMSEncryptionClient Frame" + seq.to_bytes(4, "big") + length.to_bytes(8, "big")


def bare_memory(spec: Spec) -> dict[str, Any]:
    """AES-GCM over exactly ``bytes`` bytes in frames, all in memory: a buffer of at most 64 MiB, sealed or
    opened repeatedly with encrypt_into / decrypt_into into a preallocated output. The ceiling for one core."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    total = int(spec["bytes"])
    f = min(int(spec["frame"]), total)
    aead = AESGCM(os.urandom(32))
    frames = max(1, min(total, 64 * 1024 * 1024) // f)
    plain = memoryview(bytearray(os.urandom(frames * f)))
    sealed = memoryview(bytearray(frames * (f + 16)))
    out = memoryview(bytearray(frames * f))
    nonces = [i.to_bytes(12, "big") for i in range(frames)]
    aads = [_frame_aad(i, f) for i in range(frames)]
    for i in range(frames):
        aead.encrypt_into(nonces[i], plain[i * f:(i + 1) * f], aads[i], sealed[i * (f + 16):(i + 1) * (f + 16)])
    rest = total % f  # a last, shorter frame when the total is not a whole number of frames
    sealed_rest = aead.encrypt(nonces[0], plain[:rest], aads[0])
    encrypt = spec["op"] == "encrypt"
    done = 0
    start = time.perf_counter()
    while done < total:
        for i in range(frames):
            if total - done < f:
                if encrypt:
                    aead.encrypt(nonces[0], plain[:rest], aads[0])
                else:
                    aead.decrypt(nonces[0], sealed_rest, aads[0])
                done = total
                break
            if encrypt:
                aead.encrypt_into(nonces[i], plain[i * f:(i + 1) * f], aads[i], sealed[i * (f + 16):(i + 1) * (f + 16)])
            else:
                aead.decrypt_into(nonces[i], sealed[i * (f + 16):(i + 1) * (f + 16)], aads[i], out[i * f:(i + 1) * f])
            done += f
            if done >= total:
                break
    return {"seconds": time.perf_counter() - start, "bytes_in": done}


def envelope_memory(spec: Spec) -> dict[str, Any]:
    """envelope's one-shot API over the same in-memory data as ``bare_memory``: messages of at most 64 MiB,
    ``envelope.encrypt`` / ``envelope.decrypt`` until ``bytes`` bytes were processed. Unlike the bare loop,
    which reuses one output buffer, each call returns a new ``bytes`` object, so this includes the cost of
    fresh memory (page faults) that any API returning its result pays."""
    import envelope

    total = int(spec["bytes"])
    each = min(total, 64 * 1024 * 1024)
    keyring = envelope.RawAesKeyring("bench", "memory", os.urandom(32))
    plain = os.urandom(each)
    frame = int(spec["frame"])
    message = envelope.encrypt(plain, keyring=keyring, frame_length=frame)
    encrypt = spec["op"] == "encrypt"
    done = 0
    start = time.perf_counter()
    while done < total:
        if encrypt:
            envelope.encrypt(plain, keyring=keyring, frame_length=frame)
        else:
            envelope.decrypt(message, keyring=keyring)
        done += each
    return {"seconds": time.perf_counter() - start, "bytes_in": done}


def bare_file(spec: Spec) -> dict[str, Any]:
    """The simplest single-threaded file-to-file loop: readinto one frame, seal or open it, write it.

    The output is raw frames (ciphertext || tag), no header; decrypt reads what encrypt wrote.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    frame = int(spec["frame"])
    aead = AESGCM(bytes.fromhex(spec["aes_key"]))
    size = frame if spec["op"] == "encrypt" else frame + 16
    buf = bytearray(size)
    view = memoryview(buf)
    out = bytearray(frame + 16)
    seq = done = 0
    start = time.perf_counter()
    with open(spec["input"], "rb", buffering=0) as src, open(spec["output"], "wb", buffering=0) as dst:
        while True:
            n = src.readinto(buf)
            if not n:
                break
            nonce = seq.to_bytes(12, "big")
            if spec["op"] == "encrypt":
                if n == frame:
                    aead.encrypt_into(nonce, buf, _frame_aad(seq, frame), out)
                    dst.write(out)
                else:
                    dst.write(aead.encrypt(nonce, view[:n], _frame_aad(seq, n)))
            elif n == size:
                aead.decrypt_into(nonce, buf, _frame_aad(seq, frame), memoryview(out)[:frame])
                dst.write(memoryview(out)[:frame])
            else:
                dst.write(aead.decrypt(nonce, view[:n], _frame_aad(seq, n - 16)))
            done += n
            seq += 1
    return {"seconds": time.perf_counter() - start, "bytes_in": done}


# ---------------------------------------------------------------------------------------------------------
# small messages under KMS (moto_server): messages per second and KMS calls


def _count_kms_calls() -> dict[str, int]:
    """Count every AWS API call this process makes, by operation (a pass-through wrapper, not a mock)."""
    import botocore.client

    counts: dict[str, int] = {}
    original = botocore.client.BaseClient._make_api_call

    def counting(self: Any, operation_name: str, api_params: Any) -> Any:
        counts[operation_name] = counts.get(operation_name, 0) + 1
        return original(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = counting  # type: ignore[method-assign]
    return counts


def _kms_keyring(arn: str) -> Any:
    from envelope._keyrings.kms import KmsKeyring

    return KmsKeyring([arn])


def _caching_manager(keyring: Any, max_age: float, max_messages: int, capacity: int) -> Any:
    from envelope._cache import CachingMaterialsManager, LocalCache

    return CachingMaterialsManager(keyring, LocalCache(capacity), max_age=max_age, max_messages=max_messages)


def envelope_kms_small(spec: Spec) -> dict[str, Any]:
    import envelope

    counts = _count_kms_calls()
    keyring = _kms_keyring(spec["arn"])
    message = os.urandom(int(spec["message_bytes"]))
    if spec["cache"]:
        manager = _caching_manager(keyring, max_age=300.0, max_messages=int(spec["max_messages"]), capacity=100)
        encrypt: Callable[[], bytes] = lambda: envelope.encrypt(message, materials_manager=manager,  # noqa: E731
                                                                context=CONTEXT)
    else:
        encrypt = lambda: envelope.encrypt(message, keyring=keyring, context=CONTEXT)  # noqa: E731
    encrypt()  # warm-up: clients, connections
    counts.clear()
    start = time.perf_counter()
    for _ in range(int(spec["messages"])):
        encrypt()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "messages": int(spec["messages"]), "kms_calls": dict(counts)}


def esdk_kms_small(spec: Spec) -> dict[str, Any]:
    import aws_encryption_sdk
    from aws_encryption_sdk.identifiers import CommitmentPolicy

    counts = _count_kms_calls()
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[spec["arn"]])
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    algorithm = _esdk_algorithm(0x0478)
    message = os.urandom(int(spec["message_bytes"]))
    if spec["cache"]:
        manager = aws_encryption_sdk.CachingCryptoMaterialsManager(
            master_key_provider=provider, cache=aws_encryption_sdk.LocalCryptoMaterialsCache(100), max_age=300.0,
            max_messages_encrypted=int(spec["max_messages"]))
        encrypt: Callable[[], Any] = lambda: client.encrypt(  # noqa: E731
            source=message, materials_manager=manager, encryption_context=CONTEXT, algorithm=algorithm)
    else:
        encrypt = lambda: client.encrypt(source=message, key_provider=provider,  # noqa: E731
                                         encryption_context=CONTEXT, algorithm=algorithm)
    encrypt()
    counts.clear()
    start = time.perf_counter()
    for _ in range(int(spec["messages"])):
        encrypt()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "messages": int(spec["messages"]), "kms_calls": dict(counts)}


# ---------------------------------------------------------------------------------------------------------
# S3 on moto_server: boto3's own transfers (no encryption) and envelope.s3


def s3_boto3(spec: Spec) -> dict[str, Any]:
    """boto3's ``upload_file`` / ``download_file`` with its default TransferConfig (8 MiB parts, 10 threads)."""
    import boto3

    client = boto3.client("s3")
    start = time.perf_counter()
    if spec["op"] == "upload":
        client.upload_file(spec["input"], spec["bucket"], spec["key"])
    else:
        client.download_file(spec["bucket"], spec["key"], spec["output"])
    return {"seconds": time.perf_counter() - start}


def s3_envelope(spec: Spec) -> dict[str, Any]:
    """envelope.s3: encrypt a file to an object, decrypt an object to a file, or decrypt a byte range."""
    import envelope
    import envelope.s3 as s3

    keyring = envelope.load_keyring(spec["key"])
    client = s3.new_client()
    url = f"s3://{spec['bucket']}/{spec['key_name']}"
    start = time.perf_counter()
    if spec["op"] == "encrypt":
        with open(spec["input"], "rb") as src:
            result = s3.encrypt_object(src, url, keyring=keyring, context=CONTEXT, client=client, force=True)
        return {"seconds": time.perf_counter() - start, "bytes_out": result.bytes_written}
    if spec["op"] == "decrypt":
        with open(spec["output"], "wb") as dst:
            result = s3.decrypt_object(url, dst, keyring=keyring, client=client)
        return {"seconds": time.perf_counter() - start, "bytes_out": result.bytes_written}
    with s3.S3Reader(url, client=client) as reader, open(spec["output"], "wb") as dst:
        ranged = envelope.decrypt_range(reader, dst, int(spec["start"]), int(spec["end"]), keyring=keyring)
    return {"seconds": time.perf_counter() - start, "bytes_out": ranged.bytes_written,
            "bytes_fetched": reader.bytes_fetched, "requests": reader.requests, "object_size": reader.size}


OPS: dict[str, Callable[[Spec], dict[str, Any]]] = {
    "envelope": envelope_stream,
    "esdk": esdk_stream,
    "bare-memory": bare_memory,
    "envelope-memory": envelope_memory,
    "bare-file": bare_file,
    "envelope-kms-small": envelope_kms_small,
    "esdk-kms-small": esdk_kms_small,
    "s3-boto3": s3_boto3,
    "s3-envelope": s3_envelope,
    "small": small_child,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child")
    parser.add_argument("kind", choices=sorted(OPS))
    parser.add_argument("--spec", required=True, help="JSON object with the operation's parameters")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)
    result = OPS[args.kind](spec)
    result["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(args.result, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
