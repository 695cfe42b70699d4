"""A corpus of bad inputs (``corpus.py`` collects the cases of the per-category modules, ``files/`` holds the
small committed ones)."""
