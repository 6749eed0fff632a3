from seektune.cli import app

app(prog_name="seektune")
