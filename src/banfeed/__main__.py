"""``python -m banfeed`` runs the command line."""

from banfeed.cli import main

main()
