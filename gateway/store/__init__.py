"""Shared state behind one small interface: `KeyValueStore`, in memory or in Redis."""
