"""Pure-PyTorch memories of Nested Learning (imported as ``nlstudio.models``).

No Qt and no imports from the core: this package depends on torch and numpy only.
"""
