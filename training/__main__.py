"""``python -m training ARGS`` = ``pinclip ARGS`` (also ``torchrun ... -m training train ...``).

Runs :func:`training.cli.main` from the imported module, so ``CLIError`` raised by subcommands is
the class ``main`` catches (``python -m training.cli`` would load the CLI twice, as ``__main__``
and as ``training.cli``).
"""
import sys

from training.cli import main

if __name__ == "__main__":
    sys.exit(main())
