"""ota_jax's internals: argument plumbing, size buckets, compaction, matching.

Nothing here is public API; `ota_jax` re-exports what users need by name.
"""
