"""The command line: `python -m quant_core COMMAND` (one module per command in cli/commands/)."""
