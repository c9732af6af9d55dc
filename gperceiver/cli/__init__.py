"""The `gperceiver` command line: thin parsers over library functions."""
