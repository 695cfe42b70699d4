"""A corpus of bad inputs (``corpus.py`` builds them, ``files/`` holds the small committed ones)."""
