"""`python -m hypernym` is the `hypernym` command (what submitted jobs run on the cluster)."""

from hypernym.cli import main

main()
