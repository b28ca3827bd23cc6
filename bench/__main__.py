"""``python -m bench``: run the benchmark suite (see ``bench/README.md``)."""

from bench.harness import main

raise SystemExit(main())
