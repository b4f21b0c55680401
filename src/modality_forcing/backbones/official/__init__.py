"""The official release's format (flux_rgbd): its DiT and layers, its autoencoder files, and the
`official` model family that loads a release directory (docs/official_format.md)."""
