"""Flavors: how a kind of model is saved into an artifact folder and loaded back.

Detection order: ONNX ``ModelProto``, PyTorch ``nn.Module`` (when torch is imported),
scikit-learn and anything sklearn-like with ``predict``, then any picklable object (cloudpickle),
labelled as the fallback. Files and folders trained elsewhere register with :func:`save_file`.

Loading a pickle runs code: the pickled flavors load only with ``trusted=True`` (see
:mod:`mlops_magics.registry.trust`).
A scikit-learn model saved with ``format="skops"`` loads without pickle, with an explicit list of trusted types.
"""

from __future__ import annotations

from mlops_magics.flavors.base import FORMATS, Flavor, SavedModel, framework_of
from mlops_magics.flavors.kinds import FLAVORS, FilesFlavor, OnnxFlavor, PickleFlavor, SklearnFlavor, TorchFlavor
from mlops_magics.flavors.saving import (
    MAX_FILE_NAME,
    check_file_name,
    flavor_for,
    get_flavor,
    name_file,
    same_kind_of_file,
    save_file,
    save_object,
    save_path,
)
from mlops_magics.flavors.serializers import explain_unpicklable, load_skops, skops_types

__all__ = ["FLAVORS", "FORMATS", "MAX_FILE_NAME", "FilesFlavor", "Flavor", "OnnxFlavor", "PickleFlavor", "SavedModel",
           "SklearnFlavor", "TorchFlavor", "check_file_name", "explain_unpicklable", "flavor_for", "framework_of",
           "get_flavor", "load_skops", "name_file", "same_kind_of_file", "save_file", "save_object", "save_path",
           "skops_types"]
