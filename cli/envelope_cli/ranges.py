"""``envelope decrypt --range START-END``: a byte range of the plaintext, every byte of it authenticated.

A :class:`RangeJob` is a job like :class:`~envelope.batch.jobs.DecryptJob` (the runner has no branch for it): its
``transform`` calls :func:`envelope.decrypt_range`, which reads the header and only the frames that hold the
range (seeks on a file, ranged GETs on an ``s3://`` object), verifies the header and every frame it uses, and
writes nothing of a frame before its tag verified. The output is a sink like any other: a file or an S3 object
appears only after the whole range verified. Signed suites and non-framed messages are refused (the signature,
or the one tag of a non-framed body, covers the whole message). Ranges are HTTP's: ``START-END`` inclusive,
``START-`` to the end; an END past the end is clipped, a START at or past it is an error.

The range is authenticated, not the whole message: frames outside it are not read, so damage elsewhere in the
message does not stop it, by design.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from envelope import CommitmentPolicy
    from envelope.batch.jobs import Done, Materials
    from envelope.batch.streams import Readable, Writable

__all__ = ["RangeJob", "parse_range"]


def parse_range(text: str) -> tuple[int, int | None]:
    """``--range START-END`` or ``START-`` -> (start, end or None); END is inclusive."""
    from envelope import UsageError

    start, dash, end = text.strip().partition("-")
    if not dash or not start.isdecimal() or (end and not end.isdecimal()):
        hint = " (suffix ranges, -N, are not supported)" if not start and end.isdecimal() else ""
        raise UsageError(f"--range {text!r}: expected START-END or START- (plaintext byte offsets, END "
                         f"inclusive){hint}")
    first, last = int(start), int(end) if end else None
    if last is not None and last < first:
        raise UsageError(f"--range {text!r}: END is before START")
    return first, last


@dataclass(frozen=True)
class RangeJob:
    """``envelope decrypt --range``: the keyword arguments of :func:`envelope.decrypt_range`; ``-c`` as for
    :class:`~envelope.batch.jobs.DecryptJob` (``KEY=VALUE`` reproduced, ``KEY`` required with any value)."""

    start: int
    end: int | None
    required_context: Mapping[str, str | None]
    max_encrypted_data_keys: int | None
    max_frame_length: int
    commitment_policy: CommitmentPolicy | None = None
    reproduced_context: Mapping[str, str] = field(default_factory=dict)

    mode: ClassVar[Literal["decrypt"]] = "decrypt"
    key_purpose: ClassVar[Literal["decrypt"]] = "decrypt"
    new_keys: ClassVar[None] = None
    refuse_terminal: ClassVar[str | None] = None
    binary_input: ClassVar[bool] = True

    @property
    def decodes(self) -> bool:
        return False

    def output_mode(self, input_mode: int | None) -> int:
        return 0o600  # plaintext

    def transform(self, source: Readable, destination: Writable, materials: Materials, *,
                  length: int | None, threads: int | None) -> Done:
        import envelope
        from envelope.batch.jobs import Done

        result = envelope.decrypt_range(
            source, destination, self.start, self.end, materials_manager=materials.manager,  # type: ignore[arg-type]
            commitment_policy=self.commitment_policy, required_context=self.required_context,
            reproduced_context=self.reproduced_context,
            max_encrypted_data_keys=self.max_encrypted_data_keys, max_frame_length=self.max_frame_length)
        return Done(result.header, result.bytes_written)
