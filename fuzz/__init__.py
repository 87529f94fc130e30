"""Fuzzing and hostile-input tooling for ``envelope`` (not shipped in the wheel).

- :mod:`fuzz.targets`: the checks a fuzzer runs on every input (header parser, full decrypt from bytes);
  run under atheris by ``python -m fuzz run TARGET`` and under hypothesis by ``tests/format/test_fuzz.py``.
- :mod:`fuzz.vectors`: the hostile vector files in ``tests/vectors/hostile/`` (one case per file, in the
  style of age's testkit): their format, and the generator of the seed set (``python -m fuzz vectors``).

See ``python -m fuzz --help`` and SECURITY.md ("Fuzzing").
"""
