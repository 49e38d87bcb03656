"""The researcher's one command: `python bench/run.py --preset demo --out results.json [--plot]`.

Same as `gtapp bench`; see `gtapp bench --help`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gtapp.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
