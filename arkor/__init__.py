"""Arkor: distributed object storage on trio."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`arkor.embedded` (arkor.embedding), imported on first use: `import arkor` stays cheap."""
    if name == "embedded":
        from arkor.embedding import embedded

        return embedded
    raise AttributeError(f"module 'arkor' has no attribute {name!r}")
