"""`python -m warmtune.cli` is the `warmtune` command, as `python -m warmtune` is."""

from warmtune.cli import main

main()
