"""Click commands, one module per job; malsori.cli wires them into the `malsori` group."""
