"""The retired default models of fastdiffc, so that every file a past default wrote keeps decoding.

fastdiffc looks models up in its own `weights/` folder first, then in this package's
`weights/` folder when it is installed (`fastdiffc.models.registry.weight_folders`). A model
moves here when a retrained one replaces it as a pipeline's default: files name their model by
content hash, and the decoder finds the retired weights by that hash. The main wheel keeps only
today's defaults (and the models they depend on), so it stays small however often the defaults
are retrained; see fastdiffc's docs/design.md §8.
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
