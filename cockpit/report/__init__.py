"""The report of a run: ``progress.png`` and ``report.md``, drawn from the journal.

``summary.summarize`` reads a run's experiments into a ``RunSummary`` (pure read);
``plot.plot_progress`` draws autoresearch's progress chart from it; and
``markdown.render_markdown`` writes the figures a researcher reads in the morning, among them
the gain by proposer (``ProposerGain``: how much each proposer's keeps lowered the best);
``RunSummary.as_json`` gives the same figures as data (``cockpit report --json``, through
``workspace.read_report``). ``workspace.write_report`` does all three for a workspace.
"""
