"""Data: the procedural RGB-D world, sparse-depth simulators, shard storage and readers."""
