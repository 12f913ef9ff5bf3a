"""RLEdit (docs/rledit.md): a hypernetwork trained to turn an edit's keys and value
gradients into parameter shifts over a sequence of edits; the paper's non-LTE control.

The network (net.py, hypernet.py), what it reads (cache.py), the editor (editor.py, a
registered method), training (objective.py, loop.py) and the cache of trained networks
(store.py); ``editprobe train rledit`` is jobs/train_rledit.py. docs/rledit.md describes it.
"""

from .editor import RLEditEditor, edit_modules, module_shapes
from .hypernet import Hypernetwork, HypernetError, RLEditSettings
from .objective import TrainingExample, examples_from_records
from .loop import TrainingRun, train_hypernetwork

__all__ = ["Hypernetwork", "HypernetError", "RLEditEditor", "RLEditSettings", "TrainingExample", "TrainingRun", "edit_modules",
           "examples_from_records", "module_shapes", "train_hypernetwork"]
