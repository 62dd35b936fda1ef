"""The model registry: every version's state and history, the moves between states, and the
Triton versions that follow them.

Three small parts, put together by :class:`Registry` (:mod:`slidr.registry.registry`):

- :mod:`slidr.registry.states`: the state machine (states, transitions, entries, the rules of
  register, refuse, promote and rollback), pure;
- :mod:`slidr.registry.storage`: the book on disk (``registry.json`` beside the versions), its
  file locks, reconciliation with the version directories, retention;
- :mod:`slidr.registry.triton`: the loader that makes Triton hold exactly a set of versions
  (:class:`TritonVersions`, gRPC with deadlines), behind :class:`VersionLoader`.

The figures a version is expected to show and the monitor observes are
:class:`slidr.serving_figures.ServingFigures`.
"""

from slidr.registry.errors import RegistryError
from slidr.registry.registry import Registry
from slidr.registry.states import REGISTRY_FILE, Entry, State, Transition
from slidr.registry.storage import LOCK_FILE, MOVE_LOCK_FILE
from slidr.registry.triton import TritonVersions, VersionLoader

__all__ = [
    "LOCK_FILE",
    "MOVE_LOCK_FILE",
    "REGISTRY_FILE",
    "Entry",
    "Registry",
    "RegistryError",
    "State",
    "Transition",
    "TritonVersions",
    "VersionLoader",
]
