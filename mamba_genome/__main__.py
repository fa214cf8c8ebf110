"""``python -m mamba_genome`` runs the CLI."""
from .cli import main

main()
