"""Train with MMDetection 3.3.0's tools/train.py and ms_rcnn_mm loaded.

Arguments and environment variables are mmdet's: see `--help`.
"""
from ms_rcnn_mm.launch import run_mmdet_tool

if __name__ == '__main__':
    run_mmdet_tool('train.py')
