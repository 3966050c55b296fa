"""talesmith.cli: the `talesmith` command, a typer front-end over the runtime and convert libraries."""
