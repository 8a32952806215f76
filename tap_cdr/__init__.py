"""tap-cdr: a Singer tap for call detail records."""
