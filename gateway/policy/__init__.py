"""Authorization policy: which scopes each tool, resource and prompt needs (pure, no I/O)."""
