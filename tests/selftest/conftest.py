import sys
from pathlib import Path

# The harness is imported as `tests.harness`, so the repository root must be importable.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
