"""`seektune studio`: a local web app over a runs directory (app.py), its jobs (jobs.py: seektune commands as
subprocesses, state in SQLite) and what it reads (catalog.py: runs, recipes, the paths it may open)."""
