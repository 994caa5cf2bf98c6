"""Write the model-zoo table of real runs, as Markdown and CSV.

Columns: Backbone | Style | Lr schd | Mem (GB) | Inf time (fps) | box AP |
mask AP | mask AP of the Mask R-CNN baseline | gain | Config | Download.

One row per model of the metafile. Its numbers come from the work dir
``ROOT/<model name>`` (``tools/train.py``'s default name, e.g.
``work_dirs/ms-rcnn-mm_r50_fpn_1x_coco``), the baseline's mask AP from
``BASELINE_ROOT/<stem of the model's Baseline Config>`` (e.g.
``work_dirs/mask-rcnn_r50_fpn_1x_coco``, trained with mmdet's config):
mmengine's ``vis_data/scalars.json`` of training runs (memory, validation
APs) and ``<timestamp>.json`` of ``tools/test.py`` runs (test APs, seconds
per iteration). Cells no file measures stay empty
(``ms_rcnn_mm/analysis/zoo_table.py`` says exactly what is read).

Example::

    python tools/analysis_tools/benchmark_table.py work_dirs \\
        --md table.md --csv table.csv
"""
import argparse
import sys
from pathlib import Path

import ms_rcnn_mm  # noqa: F401  (configs import it)
from ms_rcnn_mm.analysis.zoo_table import build_rows, to_csv, to_markdown

METAFILE = Path(__file__).resolve().parents[2] / 'configs' / 'ms-rcnn' / (
    'metafile.yml')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[2:]))
    parser.add_argument('root', type=Path,
                        help='folder of the work dirs, one per model name')
    parser.add_argument('--baseline-root', type=Path,
                        help='folder of the Mask R-CNN baselines\' work dirs '
                        '(default: ROOT)')
    parser.add_argument('--metafile', type=Path, default=METAFILE,
                        help='metafile listing the models (default: '
                        'configs/ms-rcnn/metafile.yml)')
    parser.add_argument('--models', nargs='+',
                        help='only these model names')
    parser.add_argument('--measured-only', action='store_true',
                        help='leave out models with no work dir')
    parser.add_argument('--md', type=Path, help='write Markdown here')
    parser.add_argument('--csv', type=Path, help='write CSV here')
    return parser.parse_args(argv)


def main(argv=None) -> list:
    args = parse_args(argv)
    if not args.metafile.is_file():
        raise SystemExit(f'error: metafile {args.metafile} not found')
    try:
        rows = build_rows(args.metafile, args.root, args.baseline_root,
                          args.models, args.measured_only)
    except ValueError as error:
        raise SystemExit(f'error: {error}')
    unknown = set(args.models or ()) - {row['Name'] for row in rows}
    if unknown and not args.measured_only:
        raise SystemExit(f'error: {sorted(unknown)} not in {args.metafile}')
    markdown = to_markdown(rows)
    sys.stdout.write(markdown)
    if args.md:
        args.md.write_text(markdown)
    if args.csv:
        args.csv.write_text(to_csv(rows))
    return rows


if __name__ == '__main__':
    main()
