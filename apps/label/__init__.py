"""The labeling app: annotators compare two images and pick one (`mmalign label`).

The folder apps/label installs as the package `mmalign_label` (pyproject's package-dir);
its modules import each other relatively and one way (tests/test_label_install.py checks).
One job each:

- data: `tables` (the schema), `engines` (SQLite WAL / PostgreSQL connections), `statements`
  (the vote path's prepared statements), `store` (votes and pairs, one transaction per vote),
  `users` (the users file, scrypt password hashes), `images` (importing pairs, safe image
  paths, size and decode checks)
- what annotators and admins get: `labeling` (next pair, vote with the next pair in the
  reply), `generate` (prompt mode: pairs from a model), `stats` (agreement, position
  bias), `export` (Pick-a-Pic v2 or PreferencePair datasets), `selection` (which votes
  an export holds, by criterion), `criteria` (several questions per pair), `gold` and
  `goldmix` (gold pairs: import, mixing into queues), `quality` (gold accuracy, bias,
  kappa against the majority, Krippendorff's alpha, flags), `vlm_pairs`, `vlm_generate`
  and `vlm_export` (VLM response pairs: import, responses sampled from a VLM, TRL /
  PreferencePair export)
- the web app: `assets` (shortcut script, style sheets), `fragments` (progress bar, prompt,
  admin tables), `app` (the Gradio UI and its API), `fast_routes` (the vote route outside
  Gradio's queue), `login` (the password check off the event loop, failed logins limited
  per address), `guard` (what anonymous requests reach; sessions and events belong to their
  user), `server` (mounting it all behind the login, uvicorn)
- `cli` (the `mmalign label` command); for tests and tooling: `testing` (a pair dataset, a
  server in a subprocess), `browser` (driving the page in Chromium), `screenshots`
"""

# From the repository root the folder is also reachable as `apps.label`; importing it under
# that name would load every module a second time (two Store classes, two VoteErrors).
if __name__ != "mmalign_label":
    raise ImportError(f"the labeling app is the package `mmalign_label`, not `{__name__}`")
