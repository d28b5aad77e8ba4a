"""The cockpit's terminal screen (Textual), the only package that imports Textual.

Start it with `cockpit.ui.app.run_cockpit(workspace)`; `cockpit.ui.app.create_app()` builds the
app for tests and other front ends.
"""
