"""Local-motion-blur pairs: the synthetic generator and readers for folders on disk."""
