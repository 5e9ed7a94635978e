"""The package version, in core so that any layer can name it without importing ``sheaf``
(whose ``__init__`` imports the upper layers); ``sheaf.__version__`` re-exports it."""

__version__ = "0.1.0"
