"""Images: %package, %build, %images and %%dockerfile_steps."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from mlops_magics import api
from mlops_magics.magics.base import MagicsBase, examples, user_errors
from mlops_magics.progress import BuildProgress


@magics_class
class ImageMagics(MagicsBase):
    """Images."""

    @examples("%package iris:2 --output build/iris      # a Docker build context",
              "%package iris:2 --build")
    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS.")
    @argument("--output", "-o", metavar="DIR", help="Where to write the build context (default: under MLOPS_HOME).")
    @argument("--base-image", metavar="IMAGE", help="Base image (default: $MLOPS_BASE_IMAGE or python:3.11-slim).")
    @argument("--gpu", action="store_true", help="Use a CUDA-capable base image.")
    @argument("--extra-steps", metavar="FILE", help="A file of Dockerfile instructions to run after the base.")
    @argument("--no-wheels", action="store_true",
              help="Do not download dependencies as wheels (the build then needs network access to PyPI).")
    @argument("--build", action="store_true", help="Then build the image (as %%build does).")
    @line_magic
    def package(self, line: str) -> Any:
        """Write a deterministic Docker build context for a model version (Dockerfile, model, script, deps)."""
        args = self.parse(self.package, line)
        extra = self.read_text(args.extra_steps, "--extra-steps") if args.extra_steps else None
        if args.build:
            if args.output or args.no_wheels:
                raise UsageError("--build writes its context under MLOPS_HOME with wheels: drop --output/--no-wheels.")
            return self._build(args.ref, base=args.base_image, gpu=args.gpu, extra_steps=extra)
        with user_errors():
            return api.package(args.ref, args.output, base=args.base_image, gpu=args.gpu, extra_steps=extra,
                                  wheels=not args.no_wheels)

    def _build(self, ref: str, *, full_log: bool = False, **options: Any) -> Any:
        progress = BuildProgress(full_log)
        with user_errors():
            image = api.build(ref, progress=progress, **options)
        progress.finish()
        return image

    @examples("%build iris:2",
              "%build iris:2 --base-image python:3.11-slim --log")
    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS.")
    @argument("--base-image", metavar="IMAGE", help="Base image (default: $MLOPS_BASE_IMAGE or python:3.11-slim).")
    @argument("--gpu", action="store_true", help="Use a CUDA-capable base image.")
    @argument("--extra-steps", metavar="FILE",
              help="A file of Dockerfile instructions to run after the base (default: those of %%%%dockerfile_steps).")
    @argument("--no-cache", action="store_true", help="Rebuild every layer.")
    @argument("--log", action="store_true", help="Print the whole build output as it comes, not only the progress.")
    @line_magic
    def build(self, line: str) -> Any:
        """Build a model version's Docker image with progress, tag it mlops/NAME:VERSION-DIGEST, record it."""
        args = self.parse(self.build, line)
        extra = self.read_text(args.extra_steps, "--extra-steps") if args.extra_steps else None
        return self._build(args.ref, full_log=args.log, base=args.base_image, gpu=args.gpu, extra_steps=extra,
                           no_cache=args.no_cache)

    @examples("%images",
              "%images iris --remove")
    @magic_arguments()
    @argument("ref", nargs="?", help="NAME (every version), NAME:VERSION or NAME@ALIAS (default: every model).")
    @argument("--remove", action="store_true", help="Remove those images from the engine (not used by a live "
                                                     "deployment) and forget them.")
    @line_magic
    def images(self, line: str) -> Any:
        """List the Docker images built for model versions (tag, id, size, base), or remove them."""
        args = self.parse(self.images, line)
        with user_errors():
            if args.remove:
                print(repr(api.remove_images(args.ref)))
                return None
            return api.list_images(args.ref)

    @examples("%%dockerfile_steps iris\nRUN apt-get update && apt-get install -y libgomp1",
              "%%dockerfile_steps iris\nENV OMP_NUM_THREADS=1")
    @magic_arguments()
    @argument("name", help="The model (every version) or NAME:VERSION (one version) whose images get the steps.")
    @cell_magic
    def dockerfile_steps(self, line: str, cell: str) -> None:
        """Dockerfile instructions (RUN apt-get ..., ENV ...) for the model's images, right after FROM."""
        args = self.parse(self.dockerfile_steps, line)
        with user_errors():
            count = api.set_dockerfile_steps(args.name, cell)
        print(f"Stored {count} Dockerfile line(s) for {args.name}; %build or %deploy --target docker uses them.")
