"""The `shuqiao` command line (typer): one module per command group; failures become one clear line.

May import: everything. Nothing imports node.cli."""
