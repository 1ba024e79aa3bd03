"""``python -m bnprobe`` runs the command line, like the ``bnprobe`` console script."""

from bnprobe.cli import main

main()
