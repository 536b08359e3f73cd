"""{{ cookiecutter.project_name }}.

An API that accepts jobs, a worker that runs them, and a page that shows what happened.
"""

__version__ = "0.1.0"
