"""bon: best-of-N selection with reward reasoning models in a knockout tournament."""

__version__ = "0.1.0"
