"""DisCo: MoCo v2 for the student plus the teacher's final embedding distilled.

    accelerate launch recipes/disco.py --data DIR --method.teacher RUN_OR_WEIGHTS [--preset NAME] [--help]

The recipe (its defaults, presets and their sources) is declared in fastssl/methods/disco.py.
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not this folder

from fastssl.recipes.launch import main  # noqa: E402

if __name__ == "__main__":
    main("disco")
