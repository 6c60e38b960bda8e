"""The labeling app: annotators compare two images and pick one (`mmalign label`).

The folder apps/label installs as the package `mmalign_label` (pyproject's package-dir);
its modules import each other relatively. Modules, one job each: `users` (the users file,
scrypt password hashes), `store` (votes in SQLite WAL or PostgreSQL through SQLAlchemy,
one transaction per vote), `images` (importing pairs, safe image paths, size and decode
checks), `stats` (agreement, position bias), `export` (Pick-a-Pic v2 or PreferencePair
datasets), `app` (the Gradio UI and its API), `cli` (the `mmalign label` command).
"""

# From the repository root the folder is also reachable as `apps.label`; importing it under
# that name would load every module a second time (two Store classes, two VoteErrors).
if __name__ != "mmalign_label":
    raise ImportError(f"the labeling app is the package `mmalign_label`, not `{__name__}`")
