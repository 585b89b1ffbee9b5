"""A plugin whose import fails, as one with a missing native library would."""

raise ImportError("libhypothetical.so.3: cannot open shared object file")
