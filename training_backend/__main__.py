"""``python -m training_backend`` is the ``crii`` command."""

from training_backend.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
