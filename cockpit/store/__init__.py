"""The bus between the cockpit's processes: the workspace's journal (SQLite: runs, experiments,
events, metrics, commands, the engine's state), what its records mean (curves, trials, GPU
samples, the engine's state keys), the run modes and steering commands posted on it, the
workspace's paths and the engine's lock. The engine writes it; the screen, `cockpit status`
and the CLI read it and post commands. It imports nothing of either side."""
