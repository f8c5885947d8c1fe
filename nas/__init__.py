"""nas: find the best Transformer language-model architecture for a compute budget."""

from nas.arch import ArchConfig
from nas.errors import NasInputError
from nas.space import SearchSpace, load_space

__version__ = "0.1.0"
__all__ = ["ArchConfig", "NasInputError", "SearchSpace", "load_space", "__version__"]
