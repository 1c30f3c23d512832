"""The shareable report: notebooks executed with papermill, rendered to HTML, and the index.

``batch`` (run the lab: plan the jobs, run them, execute and render each phase's notebook),
``index`` (the front page, answer first), ``pages`` (inspect / autopsy pages), ``html`` (what every
page shares: CSS, plotly.js, CSP, badges, glossary), ``plots`` (plotly figures), ``tables`` (HTML
tables) and ``explorer`` (the notebooks' ipywidgets explorer).
May import: every other subpackage; only ``saelab.cli`` imports it.
"""
