"""The Typer command line: a thin layer over the library (the library never imports it)."""
