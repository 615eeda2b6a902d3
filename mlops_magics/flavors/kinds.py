"""The built-in flavors: scikit-learn, ONNX, PyTorch, any picklable object, plain files."""

from __future__ import annotations

import importlib.metadata
import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops_magics.errors import (
    InvalidInputError,
    MlopsError,
    SerializationError,
    UntrustedModelError,
)
from mlops_magics.flavors.base import (
    ONNX_FILE,
    PICKLE_FILE,
    SKOPS_FILE,
    TORCH_FILE,
    Flavor,
    SavedModel,
    framework_of,
    qualified,
)
from mlops_magics.flavors.serializers import (
    load_pickle,
    load_skops,
    save_pickle,
    skops_io,
    skops_types,
    unpicklable_message,
)


class SklearnFlavor:
    """scikit-learn estimators and pipelines, and any sklearn-like object with ``predict``."""

    name = "sklearn"
    description = "scikit-learn estimator or pipeline (or sklearn-like, with predict), saved with joblib"

    def accepts(self, obj: Any) -> bool:
        if isinstance(obj, type):
            return False
        return type(obj).__module__.startswith("sklearn.") or (
            callable(getattr(obj, "predict", None)) and callable(getattr(obj, "fit", None))
        )

    def save(self, obj: Any, folder: Path) -> SavedModel:
        serializer = save_pickle(obj, folder / PICKLE_FILE, prefer_joblib=True)
        framework, version = framework_of(obj)
        return SavedModel(self.name, framework, version, {"file": PICKLE_FILE, "serializer": serializer,
                                                          "class": qualified(obj)})

    def save_skops(self, obj: Any, folder: Path) -> SavedModel:
        """Write ``obj`` with skops: loading it back runs no pickle, and only the types it is told to trust.

        Raises:
            MlopsError: skops is not installed.
            SerializationError: skops cannot save it, or it uses a class defined in the notebook (``__main__``),
                which skops stores by name and a deployment could not import.
        """
        sio = skops_io()
        target = folder / SKOPS_FILE
        try:
            sio.dump(obj, target)
        except Exception as exc:
            target.unlink(missing_ok=True)
            raise SerializationError(f"skops cannot save a {qualified(obj)}: {type(exc).__name__}: {exc}. Register it "
                                     "without --format skops (it is then pickled).") from exc
        types = skops_types(target)
        local = [t for t in types if t.startswith("__main__.")]
        if local:
            target.unlink()
            raise SerializationError(
                f"--format skops stores classes by name, and {', '.join(local)} is defined in the notebook "
                "(__main__), where a deployment cannot import it from. Move it into a module, or register without "
                "--format skops (cloudpickle then saves it by value)."
            )
        framework, version = framework_of(obj)
        return SavedModel(self.name, framework, version, {"file": SKOPS_FILE, "serializer": "skops",
                                                          "class": qualified(obj), "untrusted_types": types})

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool = False) -> Any:
        path = folder / options.get("file", PICKLE_FILE)
        if options.get("serializer") == "skops":
            return load_skops(path, trusted=trusted)
        return load_pickle(path, options.get("serializer", "joblib"), trusted)


class OnnxFlavor:
    """ONNX models (an ``onnx.ModelProto``; a ``.onnx`` file registers with ``--path``)."""

    name = "onnx"
    description = "ONNX model (onnx.ModelProto or a .onnx file)"

    def accepts(self, obj: Any) -> bool:
        cls = type(obj)
        return cls.__name__ == "ModelProto" and cls.__module__.split(".")[0] == "onnx"

    def save(self, obj: Any, folder: Path) -> SavedModel:
        (folder / ONNX_FILE).write_bytes(obj.SerializeToString())
        return self._describe(obj, ONNX_FILE)

    def _describe(self, proto: Any, file: str) -> SavedModel:
        options: dict[str, Any] = {"file": file}
        if proto is not None:
            options["ir_version"] = int(proto.ir_version)
            options["opsets"] = {op.domain or "ai.onnx": int(op.version) for op in proto.opset_import}
        try:
            version: str | None = importlib.metadata.version("onnx")
        except importlib.metadata.PackageNotFoundError:
            version = None
        return SavedModel(self.name, "onnx", version, options)

    def describe_file(self, path: Path, file: str) -> SavedModel:
        """Read opsets from a ``.onnx`` file when the onnx package is installed."""
        try:
            import onnx
        except ImportError:
            return self._describe(None, file)
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise InvalidInputError(f"{path} is not a valid ONNX model: {exc}") from exc
        return self._describe(proto, file)

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool = False) -> Any:
        try:
            import onnx
        except ImportError as exc:
            raise MlopsError("Loading an ONNX model needs the onnx package: pip install onnx.") from exc
        return onnx.load(str(folder / options.get("file", ONNX_FILE)))


class TorchFlavor:
    """PyTorch modules (``torch.nn.Module``), saved whole with ``torch.save``."""

    name = "pytorch"
    description = "PyTorch nn.Module, saved whole with torch.save"

    def accepts(self, obj: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(obj, torch.nn.Module)

    def save(self, obj: Any, folder: Path) -> SavedModel:
        import torch

        by_value = type(obj).__module__ == "__main__"
        buffer = io.BytesIO()
        try:
            if by_value:
                import cloudpickle

                torch.save(obj, buffer, pickle_module=cloudpickle)
            else:
                torch.save(obj, buffer)
        except Exception as exc:
            raise SerializationError(unpicklable_message(obj)) from exc
        (folder / TORCH_FILE).write_bytes(buffer.getvalue())
        return SavedModel(self.name, "torch", torch.__version__, {"file": TORCH_FILE, "class": qualified(obj)})

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool = False) -> Any:
        path = folder / options.get("file", TORCH_FILE)
        if not trusted:
            raise UntrustedModelError(f"Refusing to load {path.name} with torch.load: a module saved whole is a "
                                      "pickle, and unpickling an untrusted file runs whatever code its author put "
                                      "in it.")
        try:
            import torch
        except ImportError as exc:
            raise MlopsError("Loading a PyTorch model needs torch: pip install torch.") from exc
        return torch.load(path, weights_only=False)


class PickleFlavor:
    """Any other picklable object, saved with cloudpickle: the fallback flavor."""

    name = "pickle"
    description = "fallback: any picklable Python object, saved with cloudpickle"

    def accepts(self, obj: Any) -> bool:
        return True

    def save(self, obj: Any, folder: Path) -> SavedModel:
        serializer = save_pickle(obj, folder / PICKLE_FILE, prefer_joblib=False)
        framework, version = framework_of(obj)
        return SavedModel(self.name, framework, version,
                          {"file": PICKLE_FILE, "serializer": serializer, "class": qualified(obj)})

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool = False) -> Any:
        return load_pickle(folder / options.get("file", PICKLE_FILE), options.get("serializer", "cloudpickle"),
                            trusted)


class FilesFlavor:
    """Files or a folder of any kind; loading returns the verified artifact folder."""

    name = "files"
    description = "files or a folder trained elsewhere; load returns their path"

    def accepts(self, obj: Any) -> bool:
        return False

    def save(self, obj: Any, folder: Path) -> SavedModel:
        raise InvalidInputError("The 'files' flavor registers a path: use --path PATH.")

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool = False) -> Any:
        return folder / options.get("path", "")


FLAVORS: dict[str, Flavor] = {
    f.name: f for f in (OnnxFlavor(), TorchFlavor(), SklearnFlavor(), PickleFlavor(), FilesFlavor())
}


