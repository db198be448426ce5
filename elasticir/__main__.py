"""`python -m elasticir` = the `elasticir` command."""

from elasticir.cli import app

app(prog_name="elasticir")
