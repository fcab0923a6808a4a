# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Errors the testbed reports to its user."""


class TestbedError(Exception):
    """A failure with a message meant for the person running the testbed."""

    __test__ = False  # not a pytest test class


class MissingPackageError(TestbedError):
    """A host program is missing; names the Debian package that provides it."""

    def __init__(self, program, package):
        super().__init__(f"'{program}' not found: install the Debian package '{package}' "
                         f"(run `make setup`, which installs requirements-apt.txt)")
        self.program = program
        self.package = package
