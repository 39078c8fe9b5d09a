"""The escape harness's ``box`` fixture (child interpreter, canaries) for every sandbox test module."""

from test_escapes_sample import box  # noqa: F401
