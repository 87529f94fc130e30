"""Rewrap: new encrypted data keys for a message's data key, without decrypting its body (``docs/rewrap.md``).

In the ESDK format a frame's AAD holds the message ID, the body string, its sequence number and its length, never
the header (section 3.1), so a new header with other encrypted data keys for the same data key, the same message
ID, suite, context, content type and frame length, and a new header tag makes a valid message whose body is the
old body byte for byte:

1. open the message as decrypt does (``_api._open_message``: policies, the old keys, the commitment, the header
   tag, reproduced context);
2. wrap the same data key with the new keyring (``Keyring.wrap(..., data_key=)``; KMS uses Encrypt), under the
   whole context the old keys saw (a signed suite's new public key in place of the old one);
3. write the new header and its tag (the required-context pairs stay required: authenticated, not stored);
4. copy the body unchanged. Signed suites: the old signature is verified and a new one made with a fresh signing
   key, in the same pass (two hashes of each byte, one read): a rewrap that re-signed without checking would turn
   a body forged by someone who can decrypt (which a signature exists to catch) into a validly signed message.
   With ``verify`` every frame's tag is checked while copying; without it (the default for unsigned suites) the
   frames are walked but not opened, and a file-to-file copy of an unsigned body goes through the kernel
   (``os.copy_file_range``, else ``os.sendfile``) without entering this process, its end checked from the file's
   size and its final frame.

The data key stays the same: a rewrap changes who can open a message, not what opens its body, so it is no
answer to a leaked data key or an old copy of the message in the wrong hands (re-encrypt for that).
"""

from __future__ import annotations

import errno
import hmac
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from . import _crypto as crypto
from ._api import (
    DEFAULT_MAX_ENCRYPTED_DATA_KEYS,
    DEFAULT_MAX_FRAME_LENGTH,
    DEFAULT_MAX_HEADER_LENGTH,
    _open_message,
    _threads,
)
from ._format import (
    FINAL_CONTENT,
    NON_FRAMED_CONTENT,
    SIGNATURE_LENGTH,
    Footer,
    Header,
    check_body_end,
    final_frame_offset,
    header_auth_bytes,
    header_tag_aad,
    rewrapped_header,
    serialize_footer,
)
from ._keyrings.base import Keyring
from ._materials import DefaultMaterialsManager, MaterialsManager
from ._stream import Hasher, Source, pass_framed, pass_non_framed, write_all
from ._suites import CommitmentPolicy, resolve_policy
from .errors import FormatError, KeyringError, TruncatedError, UsageError

__all__ = ["RewrapResult", "rewrap_stream"]

#: What copy_file_range / sendfile answer for a pair of descriptors they cannot copy between (another file
#: system on old kernels, a pipe, an O_APPEND output, ...): the next way is tried. Other errors are real ones.
_UNSUPPORTED = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF, errno.EPERM,
                errno.ESPIPE}


@dataclass(frozen=True)
class RewrapResult:
    """``header``: the new header (same message ID, suite, context but a signed suite's public key, content
    type and frame length; new encrypted data keys); ``original``: the header read. ``verified``: every frame's
    tag was checked while copying (signed suites: the old signature was verified either way)."""

    header: Header
    original: Header
    bytes_read: int
    bytes_written: int
    verified: bool


def _descriptors(source: BinaryIO, destination: BinaryIO) -> tuple[int, int, int] | None:
    """(input fd, output fd, where the message starts in the input) when the input is a regular file read
    through a file object with ``fileno`` and ``tell`` and the output has a ``fileno``; else None."""
    try:
        in_fd, out_fd, start = source.fileno(), destination.fileno(), source.tell()
        if not stat.S_ISREG(os.fstat(in_fd).st_mode):
            return None
        os.fstat(out_fd)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None
    return in_fd, out_fd, start


def _copy_file(in_fd: int, out_fd: int, offset: int, count: int) -> None:
    """``count`` bytes from ``offset`` of the input file to the output's position, in the kernel where it can:
    ``copy_file_range`` (file to file, what ``cp`` uses), else ``sendfile`` (to a pipe or socket), else through a
    buffer. An input that ends early (it shrank) is a :class:`TruncatedError`."""
    end = offset + count
    methods = [m for m in ("copy_file_range", "sendfile") if hasattr(os, m)]
    while offset < end:
        n = end - offset
        try:
            if methods and methods[0] == "copy_file_range":
                got = os.copy_file_range(in_fd, out_fd, n, offset)
            elif methods:
                got = os.sendfile(out_fd, in_fd, offset, n)
            else:
                data = os.pread(in_fd, min(n, 1 << 22), offset)
                got = len(data)
                if got:
                    write_all(lambda b: os.write(out_fd, b), data)
        except OSError as exc:
            if not methods or exc.errno not in _UNSUPPORTED:
                raise
            methods.pop(0)  # not supported for these two descriptors: the next way
            continue
        if not got:
            raise TruncatedError("message body", offset, end)
        offset += got


def _zero_copy(source: BinaryIO, destination: BinaryIO, fds: tuple[int, int, int], src: Source, header: Header
               ) -> int:
    """An unsigned body copied from file to file without reading it (module docstring): its end is checked from
    the file's size, then the input is left positioned after it. Returns the body's length."""
    in_fd, out_fd, start = fds
    at = src.position  # from the start of the message
    body_length = os.fstat(in_fd).st_size - start - at
    if header.framed:
        offset = final_frame_offset(body_length, header.frame_length)
        head = os.pread(in_fd, FINAL_CONTENT, start + at + offset)
    else:
        head = os.pread(in_fd, NON_FRAMED_CONTENT, start + at)
    check_body_end(head, at, body_length, header.frame_length, header.framed)
    flush = getattr(destination, "flush", None)
    if flush is not None:
        flush()  # the header goes first; the kernel then writes at the descriptor's position
    _copy_file(in_fd, out_fd, start + at, body_length)
    source.seek(start + at + body_length)
    return body_length


def rewrap_stream(
    source: BinaryIO,
    destination: BinaryIO,
    *,
    old: Keyring | MaterialsManager,
    new: Keyring,
    commitment_policy: CommitmentPolicy | str | None = None,
    required_context: Mapping[str, str | None] | None = None,
    reproduced_context: Mapping[str, str] | None = None,
    verify: bool | None = None,
    max_encrypted_data_keys: int | None = DEFAULT_MAX_ENCRYPTED_DATA_KEYS,
    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    max_header_length: int = DEFAULT_MAX_HEADER_LENGTH,
    threads: int | None = None,
) -> RewrapResult:
    """Rewrite the message in ``source`` into ``destination`` with the data key wrapped by ``new`` (and only by
    it), without decrypting the body; see ``docs/rewrap.md``.

    ``old`` opens the data key (a keyring, or a materials manager such as the caching one); the header is
    verified (commitment policy, key commitment, header tag) before anything is written. ``new`` wraps the same
    data key (``Keyring.wrap(..., data_key=)``). The output keeps the message ID, suite, content type, frame
    length and context (a signed suite gets a fresh signing key: a new ``aws-crypto-public-key`` and footer),
    and its body is the input's byte for byte; it decrypts with ``new`` to the same plaintext, and no longer
    with the old keys unless ``new`` includes them.

    ``verify``: also check every frame's tag while copying (default: on for signed suites, whose body is hashed
    anyway, off for unsigned ones). A signed suite's old signature is always verified before the new footer is
    written. ``required_context``, ``reproduced_context``, ``commitment_policy`` and the limits are those of
    :func:`envelope.decrypt_stream`; reproduced pairs the message does not store stay required in the output.

    What was written before an error is not a valid message: callers writing to files should write to a
    temporary file and discard it on error (the CLI does). ``destination`` is neither flushed (except before a
    copy in the kernel) nor closed.
    """
    if not isinstance(new, Keyring):
        raise UsageError(f"new= must be a keyring (it wraps the existing data key), not {type(new).__name__}")
    if isinstance(old, MaterialsManager):
        manager: MaterialsManager = old
    elif isinstance(old, Keyring):
        manager = DefaultMaterialsManager(old)
    else:
        raise UsageError(f"old= must be a keyring or a materials manager, not {type(old).__name__}")
    nthreads = _threads(threads)
    fds = _descriptors(source, destination)
    opened = _open_message(source, manager, resolve_policy(commitment_policy), required_context, False,
                           max_encrypted_data_keys, max_frame_length, max_header_length, reproduced_context)
    original, suite, src = opened.header, opened.header.suite, opened.source
    verify = suite.signed if verify is None else verify

    # section 4: a fresh signing key for signed suites; the keyrings see the whole context (section 6.4)
    stored = dict(original.encryption_context)
    signer = None
    if suite.signed:
        signer = crypto.Signer(suite)
        stored[crypto.PUBLIC_KEY_CONTEXT_KEY] = signer.public_key_b64
    required = opened.required_context
    data_key, edks = new.wrap(suite, {**stored, **required}, opened.data_key)
    if not hmac.compare_digest(bytes(data_key), bytes(opened.data_key)):
        raise KeyringError(f"{new} did not wrap the data key it was given (it returned another one)")
    if not edks:
        raise KeyringError(f"{new} produced no encrypted data key")
    header = rewrapped_header(original, stored, tuple(edks))
    tag = crypto.header_tag(opened.aead, crypto.ZERO_IV, header_tag_aad(header.raw, required))
    head = header.raw + header_auth_bytes(header.version, crypto.ZERO_IV, tag)
    write_all(destination.write, head)
    if signer is not None:
        signer.update(head)

    hashers: tuple[Hasher, ...] = tuple(h for h in (opened.verifier, signer) if h is not None)
    aead = opened.aead if verify else None
    if fds is not None and not hashers and aead is None:
        body = _zero_copy(source, destination, fds, src, original)
        src = Source(source, position=src.position + body)
    elif original.framed:
        body = pass_framed(src, destination.write, aead, original.message_id, original.frame_length,
                           hashers=hashers, threads=nthreads)
    else:
        body = pass_non_framed(src, destination.write, aead, original.message_id, max_length=max_frame_length,
                               hashers=hashers)
    written = len(head) + body
    if signer is not None:
        assert opened.verifier is not None
        length = SIGNATURE_LENGTH.unpack(src.read_exact(SIGNATURE_LENGTH.size, "signature length"))[0]
        opened.verifier.verify(src.read_exact(length, "signature"))
        footer = serialize_footer(Footer(signer.finalize()))
    else:
        footer = b""
    if not src.at_eof():
        raise FormatError("end of message", src.position, "trailing bytes after the message")
    write_all(destination.write, footer)
    return RewrapResult(header, original, src.position, written + len(footer), verify)

