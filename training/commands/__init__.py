"""Subcommands of the ``pinclip`` CLI, one module each (see ``training/cli.py``)."""
