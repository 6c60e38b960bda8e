"""The labeling app: annotators compare two images and pick one (`mmalign label`).

Modules, one job each: `users` (the users file, scrypt password hashes), `store`
(votes in SQLite WAL or PostgreSQL through SQLAlchemy, one transaction per vote),
`images` (importing pairs, safe image paths, size and decode checks), `stats`
(agreement, position bias), `export` (Pick-a-Pic v2 or PreferencePair datasets),
`app` (the Gradio UI and its API), `cli` (the `mmalign label` command).
"""
