"""Where test fixtures (checkpoints, rendered speech) are cached: outside the repo, kept between runs."""

import os
from pathlib import Path

CACHE_DIR = Path(os.environ.get("VOICECHAT_TEST_CACHE", Path.home() / ".cache" / "voicechat-tests"))
