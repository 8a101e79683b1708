"""`python -m frankenscope`: the command-line interface."""

from frankenscope.cli import main

main()
