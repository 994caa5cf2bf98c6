"""The command line of the head timing tools (``head_throughput.py``,
``mask_head_layout.py``): a config, ``--rois``, ``--repeats``,
``--threads`` and ``--out``, and one way to run and report a measurement."""
import argparse
import json
from typing import Callable, Optional, Sequence

import torch


def head_timing_parser(description: str, rois: int,
                       repeats: int) -> argparse.ArgumentParser:
    """A parser with the arguments every head timing tool takes.

    Args:
        description (str): the tool's one-line description.
        rois (int): default of ``--rois``, the RoIs the head is timed on.
        repeats (int): default of ``--repeats``, the timed rounds.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='an MS R-CNN config')
    parser.add_argument('--rois', type=int, default=rois)
    parser.add_argument('--repeats', type=int, default=repeats)
    parser.add_argument('--threads', type=int,
                        help="torch's CPU threads (default: torch's)")
    parser.add_argument('--out', help='also write the results as JSON')
    return parser


def parse_positive(parser: argparse.ArgumentParser,
                   names: Sequence[str],
                   argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv``; exit with a usage error naming ``names`` (option
    names without their dashes) unless each of them is >= 1."""
    args = parser.parse_args(argv)
    if min(getattr(args, name) for name in names) < 1:
        flags = [f"--{name.replace('_', '-')}" for name in names]
        parser.error(f"{', '.join(flags[:-1])} and {flags[-1]} must be >= 1")
    return args


def run_timing(args: argparse.Namespace, measure: Callable[[], dict],
               report: Callable[[dict], str]) -> dict:
    """Set ``--threads``, run ``measure``, add ``rois`` and ``threads`` to
    its result, print ``report(result)`` and write ``--out`` if given."""
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure()
    result.update(rois=args.rois, threads=torch.get_num_threads())
    print(report(result))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    return result
