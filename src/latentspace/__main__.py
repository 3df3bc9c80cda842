"""`python -m latentspace`: the same command line as the `latentspace` console script."""

from latentspace.cli import main

raise SystemExit(main())
