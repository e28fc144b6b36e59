"""``python -m repthesis.data fetch mnist [--data-dir=DIR]``: put real MNIST where loaders read it."""

from __future__ import annotations

import argparse
import sys

from repthesis.data import default_data_dir, fetch_mnist


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m repthesis.data", description=__doc__)
    p.add_argument("command", choices=["fetch"])
    p.add_argument("dataset", choices=["mnist"])
    p.add_argument("--data-dir", default=default_data_dir())
    args = p.parse_args(argv)
    print(f"MNIST at {fetch_mnist(args.data_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
