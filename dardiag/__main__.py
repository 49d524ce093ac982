"""``python -m dardiag ...`` (also what ``torchrun -m dardiag profile ...`` runs)."""

from dardiag.cli import app

if __name__ == "__main__":
    app()
