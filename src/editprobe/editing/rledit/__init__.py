"""RLEdit (lte-methods.md §12): a hypernetwork trained to turn an edit's keys and value
gradients into parameter shifts over a sequence of edits; the paper's non-LTE control.

Work in progress (issue #13): the network, the editor (apply / restore / save / load) and the
training loop. Not yet a registered method, nor behind the CLI (``editprobe train``).
"""

from .editor import RLEditEditor, edit_modules, module_shapes
from .hypernet import Hypernetwork, HypernetError, RLEditSettings
from .train import TrainingExample, examples_from_records
from .training import TrainingRun, train_hypernetwork

__all__ = ["Hypernetwork", "HypernetError", "RLEditEditor", "RLEditSettings", "TrainingExample", "TrainingRun", "edit_modules",
           "examples_from_records", "module_shapes", "train_hypernetwork"]
