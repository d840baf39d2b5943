"""The command lines: `styleflow` and its subcommands, and the two original scripts."""
