"""The command line, and nothing else: options become settings, settings become a library call,
errors become one line and an exit code.

May import every other package of bon; nothing in bon imports it.
- `main`: the Typer app and the commands that run models (run, sample, select, compare, eval);
- `serve`: `bon serve`, the command over bon.serve (an OpenAI-compatible endpoint);
- `outputs`: the commands that read finished runs (show, score, merge, status, pairs, plan, browse, plugins);
- `args`: option declarations, generated from the settings in bon/config.py;
- `failures`: how an exception becomes one line on stderr and an exit code.
"""
