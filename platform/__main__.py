"""`python -m warmtune` is the `warmtune` command."""

from warmtune.cli import main

main()
