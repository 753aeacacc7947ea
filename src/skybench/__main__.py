from skybench.cli import app

app()
