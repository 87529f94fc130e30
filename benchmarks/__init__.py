"""Benchmarks for envelope: ``python -m benchmarks --help``.

Compares the envelope CLI and library with the aws-encryption-sdk library and CLI, age, and the limits of the
machine (cp, ``cat | cat``, bare AES-GCM loops) on the same data, and checks the speed and memory targets of
issues 2, 5 and 6. Measured operations run in child processes (:mod:`benchmarks.child`); the orchestration is
in :mod:`benchmarks.harness`, the ratios, table, JSON and plot in :mod:`benchmarks.report`.
"""
