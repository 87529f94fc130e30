"""Messages ``envelope.encrypt`` never produces, their fields, and byte-level changes (sections 1, 3, 4, 7.1).

- :func:`write_message` writes a message from its parts with ``envelope._format`` (any frame IVs, a v1 header
  IV, an unsorted context, a non-framed body, any signature); :func:`build_message` is the tests' front end
  (a given data key and EDKs, a fresh ECDSA key for signed suites).
- :func:`layout` finds the fields the hostile vectors change, from ``envelope._format.message_fields``.
- :func:`field_map` lists a message's fields from a walker written *independently* of ``envelope._format``:
  the oracle the format tests check the parser's field names and offsets against, so it spells the layout on
  purpose (it must not share the parser's mistakes).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import envelope
from envelope import _crypto as crypto
from envelope import _format as fmt
from envelope._suites import SUITES, AlgorithmSuite

__all__ = [
    "STATIC_EDK",
    "Layout",
    "build_message",
    "field_at",
    "field_map",
    "flip",
    "flip_bit",
    "layout",
    "replace_at",
    "u16",
    "u32",
    "write_message",
]

#: An EDK no keyring owns: for messages opened by a keyring that returns a fixed data key.
STATIC_EDK = fmt.EncryptedDataKey("static", b"static-info", b"static-ciphertext")


# ---------------------------------------------------------------------------------------------------------
# byte-level changes


def flip_bit(data: bytes, bit: int) -> bytes:
    """``data`` with bit number ``bit`` (0 = the first byte's high bit) inverted."""
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    """``data`` with the byte at ``offset`` XORed with ``mask``."""
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def replace_at(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


def u16(n: int) -> bytes:
    return fmt.U16.pack(n)


def u32(n: int) -> bytes:
    return fmt.U32.pack(n)


# ---------------------------------------------------------------------------------------------------------
# writing


def write_message(suite: AlgorithmSuite, data_key: bytes, context: Mapping[str, str],
                  edks: Sequence[fmt.EncryptedDataKey], chunks: Sequence[bytes], *, frame_length: int | None = None,
                  header_iv: bytes = bytes(fmt.IV_LENGTH), iv_for: Callable[[int], bytes] | None = None,
                  non_framed: bool = False, unsorted_context: bool = False,
                  sign: Callable[[bytes], bytes] | None = None) -> bytes:
    """Write a message from its parts with the format layer: one frame per chunk, the last one final.

    ``iv_for(sequence_number)`` picks frame IVs (default: the writer's 8 zero bytes || UInt32(seq));
    ``header_iv`` is stored in a v1 header; ``unsorted_context`` writes the AAD entries in reverse order;
    ``non_framed`` writes the one chunk as a non-framed body (section 3.2); ``sign(bytes)`` returns the
    footer's signature over everything before it.
    """
    message_id = os.urandom(suite.message_id_length)
    key, commitment = crypto.derive_key(suite, data_key, message_id)
    if frame_length is None:
        frame_length = max([len(c) for c in chunks] + [1])
    if unsorted_context:
        context = dict(sorted(context.items(), key=lambda kv: kv[0].encode("utf-8"), reverse=True))
    draft = fmt.Header(suite.message_version, suite, message_id, context, tuple(edks),
                       fmt.CONTENT_NON_FRAMED if non_framed else fmt.CONTENT_FRAMED,
                       0 if non_framed else frame_length, commitment)
    body = fmt.serialize_header_body(draft, sort_context=not unsorted_context)
    iv = header_iv if suite.message_version == 1 else bytes(fmt.IV_LENGTH)
    aead = AESGCM(key)
    out = bytearray(body + fmt.serialize_header_auth(draft, fmt.HeaderAuth(iv, crypto.header_tag(aead, iv, body))))
    iv_for = iv_for or fmt.WRITER_IV.pack
    tag = fmt.TAG_LENGTH
    if non_framed:
        (chunk,) = chunks
        block_iv = iv_for(1)
        sealed = aead.encrypt(block_iv, chunk, fmt.body_aad(message_id, fmt.SINGLE_BLOCK_STRING, 1, len(chunk)))
        out += fmt.serialize_non_framed(fmt.NonFramedBody(block_iv, sealed[:-tag], sealed[-tag:]))
    else:
        for seq, chunk in enumerate(chunks, 1):
            final = seq == len(chunks)
            frame_iv = iv_for(seq)
            string = fmt.FINAL_FRAME_STRING if final else fmt.FRAME_STRING
            sealed = aead.encrypt(frame_iv, chunk, fmt.body_aad(message_id, string, seq, len(chunk)))
            out += fmt.serialize_frame(fmt.Frame(seq, frame_iv, sealed[:-tag], sealed[-tag:], final))
    if sign is not None:
        out += fmt.serialize_footer(fmt.Footer(sign(bytes(out))))
    return bytes(out)


def build_message(suite: AlgorithmSuite, data_key: bytes, chunks: Sequence[bytes], *,
                  context: Mapping[str, str] | None = None, frame_length: int | None = None,
                  header_iv: bytes = bytes(fmt.IV_LENGTH), iv_for: Callable[[int], bytes] | None = None,
                  non_framed: bool = False, unsorted_context: bool = False,
                  edks: Sequence[fmt.EncryptedDataKey] = (STATIC_EDK,),
                  keyring: envelope.Keyring | None = None, public_key: str | None = None) -> bytes:
    """A message whose body holds one frame per chunk, the last chunk in the final frame.

    The options of :func:`write_message`; signed suites get a fresh key and a plain ECDSA signature of
    whatever DER length it comes out. With ``keyring``, the data key is wrapped by it (for the final context)
    instead of using ``edks``. ``public_key`` replaces the aws-crypto-public-key value of a signed suite (to
    write a broken one).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    context = dict(context or {})
    signing_key = None
    if suite.signed:
        signing_key = ec.generate_private_key(ec.SECP256R1() if suite.curve == "p256" else ec.SECP384R1())
        context[crypto.PUBLIC_KEY_CONTEXT_KEY] = public_key or crypto.encode_public_key(signing_key.public_key())
    if keyring is not None:
        edks = keyring.wrap(suite, context, data_key)[1]
    sign = None
    if signing_key is not None:
        key = signing_key
        hash_type = hashes.SHA256 if suite.curve == "p256" else hashes.SHA384

        def sign(data: bytes) -> bytes:
            digest = hashlib.new(hash_type.name, data).digest()
            return key.sign(digest, ec.ECDSA(Prehashed(hash_type())))

    return write_message(suite, data_key, context, edks, chunks, frame_length=frame_length, header_iv=header_iv,
                         iv_for=iv_for, non_framed=non_framed, unsorted_context=unsorted_context, sign=sign)


# ---------------------------------------------------------------------------------------------------------
# finding fields


@dataclass(frozen=True)
class Layout:
    """Byte offsets of the fields the seed vectors change (from ``envelope._format.message_fields``)."""

    header_end: int  # the first body byte
    body_end: int  # the end of the header body (where the v1 header IV or the header tag starts)
    message_id: int
    context: int  # the AAD (serialised context)
    edk: int  # the first EDK's ciphertext
    edk_count: int
    other_edk: int  # the second EDK's ciphertext (0 when there is one EDK)
    frame_length: int
    frame_starts: list[int]  # each regular frame, then the final frame (empty for a non-framed body)
    final_content: int  # 0 for a non-framed body
    footer: int | None


def layout(message: bytes) -> Layout:
    fields = fmt.message_fields(message)

    def starts(name: str) -> list[int]:
        return [start for field, start, _ in fields if field == name]

    ciphertexts = starts("encrypted data key")
    tag_start, header_end = next((s, e) for n, s, e in fields if n == "header authentication tag")
    footer = starts("signature length")
    return Layout(header_end, (starts("header IV") or [tag_start])[0], starts("message ID")[0],
                  starts("encryption context")[0], ciphertexts[0], starts("encrypted data key count")[0],
                  ciphertexts[1] if len(ciphertexts) > 1 else 0, starts("frame length")[0],
                  starts("sequence number"), (starts("final frame content") or [0])[0], footer[0] if footer else None)


def field_map(message: bytes) -> list[tuple[str, int, int]]:
    """Walk a well-formed message and list every non-empty field as (name, start, end), in order.

    An implementation of sections 1, 3, 4 and 7.1 written independently of ``envelope._format``, used to
    check the field names and offsets that the parser reports. The AAD is one field ("encryption context").
    """
    fields: list[tuple[str, int, int]] = []
    pos = 0

    def take(name: str, n: int) -> bytes:
        nonlocal pos
        fields.append((name, pos, pos + n))
        pos += n
        return message[pos - n:pos]

    def u(name: str, n: int) -> int:
        return int.from_bytes(take(name, n), "big")

    version = u("version", 1)
    if version == 1:
        take("type", 1)
    suite = SUITES[u("algorithm suite ID", 2)]
    take("message ID", suite.message_id_length)
    take("encryption context", u("AAD length", 2))
    for _ in range(u("encrypted data key count", 2)):
        take("key provider ID", u("key provider ID length", 2))
        take("key provider info", u("key provider info length", 2))
        take("encrypted data key", u("encrypted data key length", 2))
    framed = u("content type", 1) == 2
    if version == 1:
        take("reserved", 4)
        take("IV length", 1)
    frame_length = u("frame length", 4)
    if version == 2:
        take("commitment key", 32)
    else:
        take("header IV", 12)
    take("header authentication tag", 16)
    if framed:
        while True:
            if u("sequence number", 4) == 0xFFFFFFFF:
                take("final frame sequence number", 4)
                take("final frame IV", 12)
                take("final frame content", u("final frame content length", 4))
                take("final frame tag", 16)
                break
            take("frame IV", 12)
            take("frame content", frame_length)
            take("frame tag", 16)
    else:
        take("body IV", 12)
        take("body content", u("body content length", 8))
        take("body tag", 16)
    if suite.signed:
        take("signature", u("signature length", 2))
    assert pos == len(message), "field_map walked past or short of the message"
    return [f for f in fields if f[2] > f[1]]


def field_at(fields: list[tuple[str, int, int]], name: str, occurrence: int = 0) -> tuple[int, int]:
    """(start, end) of the ``occurrence``-th field called ``name``."""
    found = [(s, e) for n, s, e in fields if n == name]
    return found[occurrence]
