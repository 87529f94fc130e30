"""Multi-keyring: a generator plus children (section 7.4, "Multi-keyring")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .._format import EncryptedDataKey
from .._suites import AlgorithmSuite
from ..errors import KeyringError, UsageError
from .base import Keyring

__all__ = ["MultiKeyring"]


class MultiKeyring:
    """On encrypt the generator makes the data key and every child wraps it too.

    On decrypt the generator and then each child is tried in order; when all fail, the error lists every
    attempt of every keyring.
    """

    def __init__(self, generator: Keyring | None = None, children: Sequence[Keyring] = ()) -> None:
        if generator is None and not children:
            raise UsageError("a multi-keyring needs a generator or at least one child")
        self.generator = generator
        self.children = list(children)

    @property
    def keyrings(self) -> list[Keyring]:
        return ([self.generator] if self.generator is not None else []) + self.children

    def __str__(self) -> str:
        return "multi-keyring [" + ", ".join(str(k) for k in self.keyrings) + "]"

    def wrap(self, suite: AlgorithmSuite, context: Mapping[str, str], data_key: bytes | None = None
             ) -> tuple[bytes, list[EncryptedDataKey]]:
        edks: list[EncryptedDataKey] = []
        if self.generator is not None:
            data_key, edks = self.generator.wrap(suite, context, data_key)
        elif data_key is None:
            raise UsageError("a multi-keyring without a generator cannot make a data key")
        for child in self.children:
            _, more = child.wrap(suite, context, data_key)
            edks += more
        return data_key, edks

    def unwrap(self, suite: AlgorithmSuite, context: Mapping[str, str], edks: Sequence[EncryptedDataKey]
               ) -> bytes:
        attempts: list[str] = []
        unauthenticated = False
        for keyring in self.keyrings:
            try:
                return keyring.unwrap(suite, context, edks)
            except KeyringError as exc:
                unauthenticated = unauthenticated or exc.unauthenticated
                attempts += [f"{keyring}: {a}" for a in exc.attempts] or [f"{keyring}: {exc}"]
        raise KeyringError("no keyring could open the data key", attempts, unauthenticated=unauthenticated)
