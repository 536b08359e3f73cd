"""`python -m <app>.db.migrate [migrate|info|validate]`: the command line lives in `cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
