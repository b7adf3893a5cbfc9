"""Mean Shift, weak target view.

    accelerate launch recipes/msf.py --data DIR [--preset NAME] [--help]

The recipe (its defaults, presets and their sources) is declared in fastssl/methods/msf.py.
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not this folder

from fastssl.recipes.launch import main  # noqa: E402

if __name__ == "__main__":
    main("msf")
