"""The read side: what the screen and `cockpit status` show, read from the journal alone. It
imports the bus (`cockpit.store`) and never the engine, so that a screen on a workspace shows
the same whether an engine runs, has died or never started."""
