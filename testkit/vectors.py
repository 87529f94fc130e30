"""Hostile vector files: one case per file in ``tests/vectors/hostile/``, in the style of age's testkit.

A file is a few ``name: value`` lines, a blank line, then the message in base64 (76 characters a line)::

    expect: auth failure
    description: one bit of the final frame's ciphertext flipped
    suite: 0x0478
    key: raw-aes hostile vector-key 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
    commitment-policy: require-encrypt-allow-decrypt

    AgR4...

``expect`` is one of ``success``, ``format failure``, ``auth failure``, ``policy failure``, ``key failure``
(:data:`EXPECT` maps them to exception classes and CLI exit codes). Optional lines: ``suite`` (for readers),
``commitment-policy`` (an ESDK policy name, lower case with dashes), ``max-encrypted-data-keys``,
``required-context`` (``KEY=VALUE``; repeatable), ``plaintext-sha256`` (success only). Decrypt always uses the
library's default limits otherwise (envelope.DEFAULT_MAX_*), so that the CLI gives the same answer.

``python -m fuzz vectors --write`` regenerates the seed set (:func:`seed_vectors`); ``python -m fuzz vectors
--add CRASH --expect ... --description ...`` turns an input a fuzzer found into a new regression vector
(:func:`regression`). The seed messages are written by :func:`assemble`, on ``testkit.messages``.
Messages hold random message IDs, IVs and signatures, so a regenerated file differs byte for byte from the
committed one while testing the same case.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import envelope
from envelope import _crypto as crypto
from envelope import _format as fmt
from envelope._suites import SUITES, AlgorithmSuite
from envelope.errors import AuthenticationError, EnvelopeError, FormatError, KeyringError, PolicyError

from .messages import flip, layout, replace_at, write_message

__all__ = [
    "EXPECT",
    "EXIT_CODES",
    "FOLDER",
    "KEY",
    "KEYRING",
    "READ_ANY",
    "Vector",
    "assemble",
    "dump",
    "load",
    "load_all",
    "plaintext",
    "regression",
    "seed_vectors",
    "write",
]

FOLDER = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "hostile"
KEY_NAMESPACE, KEY_NAME, KEY = "hostile", "vector-key", bytes(range(32))
KEYRING = envelope.RawAesKeyring(KEY_NAMESPACE, KEY_NAME, KEY)
#: A second key whose EDK every seed message also carries; the vectors never give it to decrypt.
OTHER = envelope.RawAesKeyring("hostile", "absent-key", bytes(range(100, 132)))
CONTEXT = {"purpose": "hostile-vectors", "stage": "test"}
READ_ANY = "require-encrypt-allow-decrypt"
FRAME = 64

#: expect value -> the exception class decrypt raises (None: it succeeds)
EXPECT: dict[str, type[EnvelopeError] | None] = {
    "success": None,
    "format failure": FormatError,
    "auth failure": AuthenticationError,
    "policy failure": PolicyError,
    "key failure": KeyringError,
}
#: expect value -> the CLI's exit code (README "Exit codes")
EXIT_CODES = {"success": 0, "format failure": 1, "auth failure": 1, "policy failure": 1, "key failure": 3}
_HEADER_LINE = re.compile(r"^([a-z0-9-]+): (.*)$")


@dataclass
class Vector:
    name: str
    expect: str
    description: str
    message: bytes
    fields: list[tuple[str, str]] = field(default_factory=list)  # the other header lines, in order

    def get(self, key: str, default: str | None = None) -> str | None:
        return next((value for name, value in self.fields if name == key), default)

    def get_all(self, key: str) -> list[str]:
        return [value for name, value in self.fields if name == key]

    @property
    def keyring(self) -> envelope.RawAesKeyring:
        kind, namespace, name, key_hex = (self.get("key") or "").split(" ")
        if kind != "raw-aes":
            raise ValueError(f"{self.name}: unknown key kind {kind!r}")
        return envelope.RawAesKeyring(namespace, name, bytes.fromhex(key_hex))

    @property
    def key_file(self) -> dict[str, str]:
        """The key in the CLI's key-file shape (README "Key files")."""
        _, namespace, name, key_hex = (self.get("key") or "").split(" ")
        return {"type": "raw-aes", "namespace": namespace, "name": name,
                "key": base64.b64encode(bytes.fromhex(key_hex)).decode()}

    @property
    def decrypt_options(self) -> dict[str, object]:
        """Keyword arguments for envelope.decrypt / decrypt_stream (besides the keyring)."""
        options: dict[str, object] = {}
        if self.get("commitment-policy"):
            options["commitment_policy"] = self.get("commitment-policy")
        if self.get("max-encrypted-data-keys"):
            options["max_encrypted_data_keys"] = int(self.get("max-encrypted-data-keys") or 0)
        required = dict(pair.split("=", 1) for pair in self.get_all("required-context"))
        if required:
            options["required_context"] = required
        return options

    @property
    def cli_options(self) -> list[str]:
        """The same settings as ``envelope decrypt`` options."""
        args: list[str] = []
        if self.get("commitment-policy"):
            args += ["--commitment-policy", self.get("commitment-policy") or ""]
        if self.get("max-encrypted-data-keys"):
            args += ["--max-encrypted-data-keys", self.get("max-encrypted-data-keys") or ""]
        for pair in self.get_all("required-context"):
            args += ["-c", pair]
        return args


def dump(vector: Vector) -> str:
    lines = [f"expect: {vector.expect}", f"description: {vector.description}"]
    lines += [f"{name}: {value}" for name, value in vector.fields]
    encoded = base64.b64encode(vector.message).decode()
    return "\n".join(lines) + "\n\n" + "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76)) + "\n"


def load(path: Path) -> Vector:
    text = path.read_text(encoding="utf-8")
    head, sep, body = text.partition("\n\n")
    if not sep:
        raise ValueError(f"{path.name}: no blank line between the header and the message")
    fields: list[tuple[str, str]] = []
    for line in head.splitlines():
        match = _HEADER_LINE.match(line)
        if match is None:
            raise ValueError(f"{path.name}: bad header line {line!r}")
        fields.append((match[1], match[2]))
    values = dict(fields)
    expect, description = values.get("expect"), values.get("description")
    if expect not in EXPECT or not description:
        raise ValueError(f"{path.name}: needs 'expect: {' | '.join(EXPECT)}' and a description")
    rest = [(k, v) for k, v in fields if k not in ("expect", "description")]
    message = base64.b64decode("".join(body.split()), validate=True)
    return Vector(path.name, expect, description, message, rest)


def load_all(folder: Path = FOLDER) -> list[Vector]:
    return [load(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(("README", "."))]


# ---------------------------------------------------------------------------------------------------------
# the seed messages (sections 1, 3, 4), written with testkit.messages on the format layer


def assemble(suite_id: int, chunks: Sequence[bytes], *, context: Mapping[str, str] = CONTEXT,
             extra_edks: Sequence[fmt.EncryptedDataKey] = (), edks_first: bool = False,
             frame_length: int | None = None, non_framed: bool = False, header_iv: bytes = bytes(fmt.IV_LENGTH),
             unsorted_context: bool = False, public_key: bool | None = None) -> bytes:
    """A message under :data:`KEYRING` (and :data:`OTHER`) with one frame per chunk, the last one final.

    ``extra_edks`` are added after the real EDKs (before them with ``edks_first``). ``public_key``: None puts
    the signing key in the context exactly when the suite signs; True / False force it in / out (half-signed
    and unsigned-signed messages). ``non_framed`` writes the single chunk as a non-framed body (section 3.2).
    """
    suite = SUITES[suite_id]
    data_key = os.urandom(suite.key_length)
    context = dict(context)
    signer = crypto.Signer(suite) if suite.signed else None
    with_key = suite.signed if public_key is None else public_key
    if with_key:
        context[crypto.PUBLIC_KEY_CONTEXT_KEY] = (signer or crypto.Signer(SUITES[0x0578])).public_key_b64
    edks = list(KEYRING.wrap(suite, context, data_key)[1]) + list(OTHER.wrap(suite, context, data_key)[1])
    edks = [*extra_edks, *edks] if edks_first else [*edks, *extra_edks]
    sign = None
    if signer is not None:
        def sign(data: bytes) -> bytes:
            signer.update(data)
            return signer.finalize()

    return write_message(suite, data_key, context, edks, chunks, frame_length=frame_length, header_iv=header_iv,
                         non_framed=non_framed, unsorted_context=unsorted_context, sign=sign)


# ---------------------------------------------------------------------------------------------------------
# the seed set


def plaintext(size: int = 3 * FRAME + 7) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"hostile vectors %d" % counter).digest()
        counter += 1
    return out[:size]


def _chunks(data: bytes, frame: int = FRAME) -> list[bytes]:
    return [data[i:i + frame] for i in range(0, len(data) - len(data) % frame, frame)] + [data[len(data)
                                                                                             - len(data) % frame:]]


def seed_vectors() -> list[Vector]:
    """The seed set: each tamper class for 0x0478, 0x0578 and v1 0x0178, and the hostile headers."""
    vectors: list[Vector] = []
    key_line = f"raw-aes {KEY_NAMESPACE} {KEY_NAME} {KEY.hex()}"
    data = plaintext()

    def add(name: str, expect: str, description: str, message: bytes, suite_id: int, *,
            extra: Iterable[tuple[str, str]] = (), content: bytes | None = None) -> None:
        fields = [("suite", f"0x{suite_id:04x}"), ("key", key_line)]
        if not SUITES[suite_id].committing:
            fields.append(("commitment-policy", READ_ANY))
        fields += list(extra)
        if expect == "success":
            fields.append(("plaintext-sha256", hashlib.sha256(data if content is None else content).hexdigest()))
        vectors.append(Vector(name, expect, description, message, fields))

    for suite_id in (0x0478, 0x0578, 0x0178):
        suite: AlgorithmSuite = SUITES[suite_id]
        tag = f"{suite_id:04x}"
        message = assemble(suite_id, _chunks(data))
        at = layout(message)
        regular, final = at.frame_starts[0], at.frame_starts[-1]
        cases: list[tuple[str, str, str, bytes]] = [
            ("ok", "success", f"a valid message: {len(at.frame_starts) - 1} frames of {FRAME} bytes and a final "
             "frame; two EDKs, one for the key given", message),
            ("flip-version", "format failure", "the version byte changed", flip(message, 0)),
            ("flip-message-id", "auth failure", "one bit of the message ID flipped (another derived key: "
             + ("the commitment" if suite.committing else "the header tag") + " fails)",
             flip(message, at.message_id + 5)),
            ("flip-context", "key failure", "one bit of an encryption-context value flipped: the raw AES key "
             "binds the context, so the data key no longer unwraps",
             flip(message, message.index(b"hostile-vectors", at.context) + 2)),
            ("flip-edk", "key failure", "one bit of the EDK for the given key flipped", flip(message, at.edk + 3)),
            ("flip-other-edk", "auth failure", "one bit of the other EDK flipped (the header tag covers every EDK)",
             flip(message, at.other_edk + 3)),
            ("flip-edk-count", "format failure", "the EDK count raised by one: the header no longer parses",
             flip(message, at.edk_count + 1, 0x01 if message[at.edk_count + 1] % 2 == 0 else 0x04)),
            ("flip-frame-length", "auth failure", "one bit of the frame length flipped (the header tag fails)",
             flip(message, at.frame_length + 3)),
            ("flip-header-tag", "auth failure", "one bit of the header authentication tag flipped",
             flip(message, at.header_end - 1)),
            ("flip-regular-frame", "auth failure", "one bit of the second regular frame's ciphertext flipped",
             flip(message, at.frame_starts[1] + fmt.REGULAR_CONTENT + 4)),
            ("flip-final-frame", "auth failure", "one bit of the final frame's ciphertext flipped",
             flip(message, at.final_content + 1)),
            ("truncated-at-frame-boundary", "format failure", "the message ends where the final frame starts",
             message[:final]),
            ("truncated-in-edk", "format failure", "the message ends inside the first EDK's ciphertext",
             message[:at.edk + 10]),
            ("truncated-in-frame", "format failure", "the message ends inside the first regular frame's ciphertext",
             message[:regular + fmt.REGULAR_CONTENT + 24]),
            ("trailing-bytes", "format failure", "one zero byte after the end of the message", message + b"\x00"),
            ("sequence-gap", "format failure", "the second regular frame is numbered 3",
             replace_at(message, at.frame_starts[1], fmt.SEQUENCE_NUMBER.pack(3))),
            ("sequence-wrap", "format failure", "the first frame is numbered 0, as a wrapped 32-bit counter would be",
             replace_at(message, regular, fmt.SEQUENCE_NUMBER.pack(0))),
        ]
        if suite.committing:
            cases.append(("flip-commitment", "auth failure", "one bit of the commitment key flipped",
                          flip(message, at.body_end - 1)))
        else:
            cases.append(("flip-header-iv", "auth failure", "one bit of the v1 header IV flipped",
                          flip(message, at.body_end + 2)))
        if suite.signed:
            assert at.footer is not None
            cases += [
                ("flip-signature", "auth failure", "one bit inside the DER signature flipped",
                 flip(message, at.footer + 40)),
                ("signature-stripped", "format failure", "the footer removed: a signed message without its signature",
                 message[:at.footer]),
                ("truncated-in-signature", "format failure", "the message ends inside the signature",
                 message[:at.footer + 20]),
            ]
        for name, expect, description, tampered in cases:
            add(f"{tag}-{name}", expect, description, tampered, suite_id)
        # ESDK ChangeEDKProviderInfo tampering: every EDK's provider info replaced
        parsed = fmt.parse_message(message)
        changed = [fmt.EncryptedDataKey(e.provider_id, b"changed-provider-info", e.ciphertext)
                   for e in parsed.header.encrypted_data_keys]
        head = fmt.serialize_header_body(fmt.Header(
            parsed.header.version, suite, parsed.header.message_id, parsed.header.encryption_context, tuple(changed),
            parsed.header.content_type, parsed.header.frame_length, parsed.header.commitment))
        add(f"{tag}-changed-provider-info", "key failure", "every EDK's provider info replaced by "
            "'changed-provider-info' (the ESDK test framework's provider-info tampering)",
            head + message[at.body_end:], suite_id)

    # half-signing (the ESDK framework's HalfSigningTampering) and its mirror image
    add("0478-half-signed", "format failure", "an unsigned suite whose context carries aws-crypto-public-key "
        "(a correctly authenticated, half-signed message)", assemble(0x0478, _chunks(data), public_key=True), 0x0478)
    add("0578-no-public-key", "format failure", "a signed suite whose context lacks aws-crypto-public-key",
        assemble(0x0578, _chunks(data), public_key=False), 0x0578)
    # valid messages envelope never writes
    add("0578-unsorted-context", "success", "context entries written in reverse order (readers accept any order)",
        assemble(0x0578, _chunks(data), unsorted_context=True), 0x0578)
    add("0178-header-iv", "success", "a v1 header IV that is not zero (the tag is computed with it)",
        assemble(0x0178, _chunks(data), header_iv=bytes(range(1, 13))), 0x0178)
    add("0478-non-framed", "success", "a non-framed body (section 3.2), as old ESDK versions wrote",
        assemble(0x0478, [data], non_framed=True), 0x0478)

    # hostile headers, each with a valid header tag so that only the limit stops it
    small = data[:10]
    junk_edk = fmt.EncryptedDataKey("junk", b"", b"")
    many = assemble(0x0478, [small], extra_edks=[junk_edk] * 254)
    add("edk-count-256", "success", "256 EDKs, the default limit: two real ones and 254 empty 'junk' EDKs",
        many, 0x0478, content=small)
    add("edk-count-257", "policy failure", "257 EDKs, one above the default limit of 256 (refused as soon as "
        "the count is read)", assemble(0x0478, [small], extra_edks=[junk_edk] * 255), 0x0478)
    add("edk-count-257-allowed", "success", "257 EDKs read with --max-encrypted-data-keys 257",
        assemble(0x0478, [small], extra_edks=[junk_edk] * 255), 0x0478, content=small,
        extra=[("max-encrypted-data-keys", "257")])
    count_at = layout(many).edk_count
    add("edk-count-65535", "policy failure", "the EDK count says 65,535 (the bytes after it are a 256-EDK header)",
        replace_at(many, count_at, b"\xff\xff"), 0x0478)
    add("edk-count-65535-allowed", "format failure", "the EDK count says 65,535, read with the limit raised to "
        "65,535: the input ends inside the EDK list",
        replace_at(many, count_at, b"\xff\xff"), 0x0478, extra=[("max-encrypted-data-keys", "65535")])
    big = fmt.EncryptedDataKey("junk", b"\xa5" * 0xFFFF, b"\x5a" * 0xFFFF)
    add("edk-fields-65535", "success", "an extra EDK whose provider info and ciphertext are 65,535 bytes each",
        assemble(0x0478, [small], extra_edks=[big], edks_first=True), 0x0478, content=small)
    long_id = "j" * 0xFFFF
    message = assemble(0x0478, [small], extra_edks=[fmt.EncryptedDataKey(long_id, b"info", b"x")])
    parsed = fmt.parse_message(message)
    only_long = parsed.header.encrypted_data_keys[2:]
    head = fmt.serialize_header_body(fmt.Header(
        2, parsed.header.suite, parsed.header.message_id, parsed.header.encryption_context, only_long,
        parsed.header.content_type, parsed.header.frame_length, parsed.header.commitment))
    add("edk-provider-id-65535", "key failure", "the only EDK has a 65,535-byte provider ID (the error line "
        "must stay short)", head + message[len(parsed.header.raw):], 0x0478)
    wide = {"k": "v" * (0xFFFF - 2 - 2 - 1 - 2)}  # AAD length 65,535: the largest context the format holds
    add("context-64k", "success", "an encryption context of 65,535 bytes (the format's maximum)",
        assemble(0x0478, [small], context=wide), 0x0478, content=small)
    message = assemble(0x0478, [small])
    at = layout(message)
    add("context-count-65535", "format failure", "the context count says 65,535 entries inside a short AAD",
        replace_at(message, at.context, b"\xff\xff"), 0x0478)
    add("frame-length-4294967295", "policy failure", "frame length 2^32 - 1 (above the 64 MiB default limit), "
        "with a valid header tag", assemble(0x0478, [small], frame_length=2**32 - 1), 0x0478)
    add("frame-length-64mib", "success", "frame length 64 MiB (at the default limit) and a 10-byte final frame: "
        "read without allocating a frame buffer", assemble(0x0478, [small], frame_length=64 * 1024 * 1024),
        0x0478, content=small)
    add("frame-length-64mib-plus-1", "policy failure", "frame length 64 MiB + 1, one above the default limit",
        assemble(0x0478, [small], frame_length=64 * 1024 * 1024 + 1), 0x0478)
    message = assemble(0x0478, [small], frame_length=16)
    final_len_at = layout(message).frame_starts[-1] + fmt.FINAL_LENGTH
    add("final-frame-length-4294967295", "format failure", "the final frame's content length says 2^32 - 1",
        replace_at(message, final_len_at, fmt.U32.pack(2**32 - 1)), 0x0478)
    message = assemble(0x0478, [small], non_framed=True)
    length_at = layout(message).header_end + fmt.NON_FRAMED_LENGTH
    add("non-framed-length-2-36", "format failure", "a non-framed body whose length says 2^36 (above 2^36 - 32)",
        replace_at(message, length_at, fmt.U64.pack(2**36)), 0x0478)
    add("non-framed-length-2-36-minus-32", "policy failure", "a non-framed body of 2^36 - 32 bytes, the format's "
        "maximum, above the 64 MiB limit for one block",
        replace_at(message, length_at, fmt.U64.pack(fmt.MAX_NON_FRAMED_LENGTH)), 0x0478)
    message = assemble(0x0578, _chunks(data))
    at = layout(message)
    add("0578-final-frame-sequence-max", "format failure", "the final frame numbered 2^32 - 1",
        replace_at(message, at.frame_starts[-1] + fmt.FINAL_SEQUENCE, fmt.SEQUENCE_NUMBER.pack(2**32 - 1)), 0x0578)
    add("0578-regular-frame-sequence-max", "format failure", "the first frame numbered 2^32 - 2, the last number "
        "a regular frame can have", replace_at(message, at.frame_starts[0], fmt.SEQUENCE_NUMBER.pack(2**32 - 2)),
        0x0578)
    return vectors


def write(vectors: Iterable[Vector], folder: Path = FOLDER) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for vector in vectors:
        path = folder / vector.name
        path.write_text(dump(vector), encoding="utf-8")
        paths.append(path)
    return paths


def regression(data: bytes, *, expect: str, description: str, name: str | None = None) -> Vector:
    """A vector for an input a fuzzer found. The fuzz targets use :data:`KEYRING`, so the key line is it."""
    if expect not in EXPECT:
        raise ValueError(f"expect must be one of {', '.join(EXPECT)}")
    fields = [("key", f"raw-aes {KEY_NAMESPACE} {KEY_NAME} {KEY.hex()}"), ("commitment-policy", READ_ANY)]
    if expect == "success":
        result = envelope.decrypt(data, keyring=KEYRING, commitment_policy=READ_ANY)
        fields.append(("plaintext-sha256", hashlib.sha256(result.plaintext).hexdigest()))
    digest = hashlib.sha256(data).hexdigest()[:12]
    return Vector(name or f"fuzz-{digest}", expect, description, data, fields)
