"""`python -m mmalign.toy.models.vlm OUT_DIR`: build toy-vlm (see `build.main`)."""

from .build import main

main()
