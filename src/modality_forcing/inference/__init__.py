"""Inference: the pipeline, sampling jobs, image -> depth prediction and benchmark scoring, the
demo, galleries and exports (PNG, colour maps, PLY/GLB)."""
