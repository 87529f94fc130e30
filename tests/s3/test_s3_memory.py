"""Memory stays bounded whatever the object's size: a large object encrypted to S3 and decrypted back, in a
subprocess that reports its own peak RSS (ru_maxrss), against moto_server with S3's real part sizes.

Figures are printed (``pytest -s``) and put in the assertion messages. The bounds are generous on purpose
(a shared machine; allocator noise): what must hold is that the peak does not grow with the object, and that
above the floor of the process (Python, envelope, boto3 and the S3 client's model, measured in the same
process before any transfer) it stays within 64 MiB plus the part buffers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from aws_fixtures import AwsEnv

MIB = 1024 * 1024
BUCKET = "envelope-rss"

_SCRIPT = textwrap.dedent("""
    import hashlib, json, resource, sys
    import envelope, envelope.s3 as s3
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    class RandomSource:  # pseudo-random bytes generated as they are read: no file, no big buffer
        def __init__(self, size):
            self.left = size
            self.stream = Cipher(algorithms.AES(bytes(32)), modes.CTR(bytes(16))).encryptor()
            self.zeros = bytes(1024 * 1024)
            self.digest = hashlib.sha256()

        def readinto(self, buf):
            view = memoryview(buf).cast("B")
            done = 0
            while done < len(view) and self.left:
                n = min(len(view) - done, self.left, len(self.zeros))
                self.stream.update_into(self.zeros[:n], view[done:done + n])
                self.digest.update(view[done:done + n])
                done += n
                self.left -= n
            return done

    class HashSink:
        def __init__(self):
            self.digest = hashlib.sha256()

        def write(self, data):
            self.digest.update(data)
            return len(data)

    size, url = int(sys.argv[1]), sys.argv[2]
    client = s3.new_client()
    keyring = envelope.RawAesKeyring("ns", "rss", bytes(32))
    s3.encrypt_object(RandomSource(1024), url + ".warm", keyring=keyring, client=client)  # load everything once
    floor = peak()
    source = RandomSource(size)
    result = s3.encrypt_object(source, url, keyring=keyring, client=client)
    after_encrypt = peak()
    sink = HashSink()
    s3.decrypt_object(url, sink, keyring=keyring, client=client)
    print(json.dumps({"floor": floor, "encrypt": after_encrypt, "peak": peak(), "bytes": result.bytes_written,
                      "same": sink.digest.digest() == source.digest.digest()}))
""")


def _run(tmp_path: Path, size: int, name: str) -> dict[str, float]:
    script = tmp_path / "rss.py"
    script.write_text(_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(size), f"s3://{BUCKET}/{name}"], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ), check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    figures: dict[str, float] = json.loads(done.stdout)
    assert figures["same"]
    return figures


def test_peak_rss_does_not_grow_with_the_object(aws_env: AwsEnv, tmp_path: Path) -> None:
    import envelope.s3 as s3

    aws_env.create_bucket(BUCKET)
    small = _run(tmp_path, 16 * MIB, "small.enc")
    large = _run(tmp_path, 160 * MIB, "large.enc")
    parts = s3.PART_BUFFERS * s3.DEFAULT_PART_SIZE / MIB
    report = (f"peak RSS: 16 MiB object {small['peak']:.1f} MiB, 160 MiB object {large['peak']:.1f} MiB; floor "
              f"(Python + envelope + boto3 + S3 client) {large['floor']:.1f} MiB; part buffers {parts:.0f} MiB")
    print(report)
    assert aws_env.pending_uploads(BUCKET) == []
    assert large["peak"] - small["peak"] <= 8, report  # flat: nothing grows with the object
    assert large["peak"] - large["floor"] <= 64 + parts, report
