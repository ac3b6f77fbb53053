"""`python -m emotion`: the `emotion` command line (:mod:`emotion.cli`)."""

from emotion.cli import main

raise SystemExit(main())
