"""The materials managers' protocols: ``encrypt_stream`` reads ahead for any manager that implements
``ReadsAhead`` (structurally, as the caching manager does), and for no other."""

from __future__ import annotations

import io

import envelope
from envelope._materials import (
    DecryptionMaterials,
    DecryptionRequest,
    EncryptionMaterials,
    EncryptionRequest,
    ReadsAhead,
    reads_ahead,
)

KEYRING = envelope.RawAesKeyring("ns", "protocols", bytes(range(32)))


class Recording:
    """A manager that records the plaintext length each encryption request declares."""

    def __init__(self) -> None:
        self.inner = envelope.DefaultMaterialsManager(KEYRING)
        self.lengths: list[int | None] = []
        self.decrypt_calls = 0

    def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials:
        self.lengths.append(request.plaintext_length)
        return self.inner.get_encryption_materials(request)

    def decrypt_materials(self, request: DecryptionRequest) -> DecryptionMaterials:
        self.decrypt_calls += 1
        return self.inner.decrypt_materials(request)


class ReadingAhead(Recording):
    """The same, implementing ReadsAhead without subclassing it."""

    def read_ahead_limit(self, request: EncryptionRequest) -> int | None:
        return 100


def test_encrypt_stream_reads_ahead_only_for_managers_that_implement_the_protocol() -> None:
    plain, ahead = Recording(), ReadingAhead()
    assert not reads_ahead(plain) and reads_ahead(ahead) and isinstance(ahead, ReadsAhead)
    assert reads_ahead(envelope.CachingMaterialsManager(KEYRING, envelope.LocalCache(1), max_age=60))
    for manager in (plain, ahead):
        for data in (b"x" * 100, b"x" * 101):
            out = io.BytesIO()
            envelope.encrypt_stream(io.BytesIO(data), out, materials_manager=manager)
            assert envelope.decrypt(out.getvalue(), keyring=KEYRING).plaintext == data
    assert plain.lengths == [None, None]
    assert ahead.lengths == [100, None]  # learned within the bound; unknown past it
