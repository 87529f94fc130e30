"""Fuzzing and hostile-input tooling for ``envelope`` (not shipped in the wheel).

- :mod:`fuzz.targets`: the checks a fuzzer runs on every input (header parser, full decrypt from bytes);
  run under atheris by ``python -m fuzz run TARGET`` and under hypothesis by ``tests/format/test_fuzz.py``.
- ``python -m fuzz vectors``: lists, regenerates or adds to the hostile vector files in
  ``tests/vectors/hostile/``, whose format and seed set live in :mod:`testkit.vectors`.

See ``python -m fuzz --help`` and SECURITY.md ("Fuzzing").
"""
