"""Test support for ``envelope``, shared by ``tests/``, ``fuzz/`` and ``benchmarks/`` (not shipped in the wheel).

- :mod:`testkit.messages`: writing messages ``envelope.encrypt`` never produces (any IV, unsorted contexts,
  non-framed bodies, broken signing keys), finding their fields and changing bytes in them.
- :mod:`testkit.vectors`: the hostile vector files in ``tests/vectors/hostile/`` (one case per file, in the
  style of age's testkit): their format, the key they use, and the generator of the seed set.
- :mod:`testkit.sources`: binary sources that misbehave on purpose (a slow pipe; a stream that declares
  terabytes and generates them as it is read).
- :mod:`testkit.hostile`: the hostile headers and bodies of issue 7 and how to run one (in this process or
  in a fresh interpreter, for peak RSS).

The three users import from here and never from each other: the tests do not import ``fuzz`` or
``benchmarks`` (except to test those tools themselves), and ``benchmarks`` does not import ``fuzz``.
"""
