"""`cockpit doctor`: is this box ready for a night of research? One line per check.

Each check is a pure function of what was read (`check_torch`, `check_gpus`, `check_probe`,
`check_landlock`, `check_userns`, `check_disk`, `check_corpus`, `check_ollama`,
`check_terminal`) and gives a `Check`: its key, pass / warn / fail, a one-line summary and
the fix. The readings that feed them (NVML, torch, the confined device probe, a child process
that tries a user namespace, the disk, the corpus cache, Ollama, the terminal) are gathered by
`run_doctor`, which blocks for as long as they take: seconds, more when the device probe's
cache is cold. Nothing here raises for what it finds; a machine without an NVIDIA GPU is a
normal state with its own line, not a traceback.

The doctor passes when no check fails; warnings say what a night loses (speed, confinement,
the model's proposals) without stopping it.

One module per concern: `verdicts` (a check's verdict and how they are shown), `gpu` (torch
and the GPUs), `confinement` (the device probe, Landlock, user namespaces), `storage` (disk
and the corpus cache), `model_server` (Ollama), `terminal`, and `checkup` (`run_doctor`:
every check, in order).
"""
