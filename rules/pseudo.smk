"""pseudo stage: filled by a later issue (see issues)."""
