"""Preference data: the `PreferencePair` schema, dataset readers/writers, and the toy world."""

# Schema and Pick-a-Pic names load on first use: importing `datasets` takes about a
# second, and `mmalign.toy` (and the CLI) should not pay for it.
_LAZY = {
    "IMAGE_PAIR_FEATURES": "schema",
    "TEXT_PAIR_FEATURES": "schema",
    "ValidationReport": "schema",
    "load_pairs": "schema",
    "pair_features": "schema",
    "validate_rows": "schema",
    "write_pairs": "schema",
    "load_pickapic": "pickapic",
    "pickapic_prompts": "pickapic",
    "write_pickapic": "pickapic",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
