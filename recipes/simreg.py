"""SimReg: the student regresses the teacher's features through a deeper prediction head.

    accelerate launch recipes/simreg.py --data DIR --method.teacher RUN_OR_WEIGHTS [--preset NAME] [--help]

The recipe (its defaults, presets and their sources) is declared in fastssl/methods/simreg.py.
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not this folder

from fastssl.recipes.launch import main  # noqa: E402

if __name__ == "__main__":
    main("simreg")
