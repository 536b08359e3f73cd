"""The status page: server-rendered HTML over the PostgreSQL ledger, refreshed live by a script.

`routes`: the pages and their fragments; `reading`: what they show, read from the ledger and
the workers' heartbeats; `formatting`: Jinja, its filters, and the headers every page sends.
"""
