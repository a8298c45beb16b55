"""The `mtl` command line: one thin Typer app over pipeline, exporters and device_runtime."""
