"""The version of promissory, in one place (the package and the command both read it)."""

__version__ = "0.1.0"
