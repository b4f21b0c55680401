"""`python -m modality_forcing` runs the CLI."""

from .cli import main

if __name__ == "__main__":
    main()
