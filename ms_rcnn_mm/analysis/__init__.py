"""What the analysis tools (``tools/analysis_tools``) compute: multiply-add
counts, the Mask R-CNN / MS R-CNN variants of a config, speed and memory
benchmarks and the model-zoo table. Not imported by ``import ms_rcnn_mm``."""
