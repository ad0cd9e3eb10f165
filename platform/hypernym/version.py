"""The package version, in a module of its own: modules the package root imports lazily
(`hypernym.registry.models`) need it too, and importing the root from them would be a cycle."""

__version__ = "0.1.0"
