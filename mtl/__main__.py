"""`python -m mtl ...`: the same as the `mtl` command."""

from mtl.cli.app import main

main()
