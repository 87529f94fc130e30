"""The S3 tests' fixtures, ``s3_env`` (a bucket on the small-parts moto_server) and ``s3_proxy`` (the fault proxy in
front of it), live in tests/aws_fixtures.py, so that the CLI's S3 tests (tests/cli/test_cli_s3.py) share them."""
