"""flashsale: a self-hosted flash-sale reservation engine.

The card's parts live at the repository root (engine/, lua/, gateway/, reconciler/, store/,
loadtests/) and are mapped into this package by setuptools' package-dir; in a checkout the
entries of this folder with those names are symlinks to them, so type checkers and
import-linter read the same tree that Python imports.
"""
