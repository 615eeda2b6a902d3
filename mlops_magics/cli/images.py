"""Verbs of images: package, build, images, dockerfile-steps."""

from __future__ import annotations

import argparse
from typing import Any

from mlops_magics import api
from mlops_magics.cli.inputs import read_text
from mlops_magics.cli.output import BuildLines, Status, Verbs
from mlops_magics.errors import InvalidInputError


def _extra_steps(args: argparse.Namespace) -> str | None:
    return read_text(args.extra_steps, "--extra-steps") if args.extra_steps else None


def _package(args: argparse.Namespace) -> Any:
    if args.build:
        if args.output or args.no_wheels:
            raise InvalidInputError("--build writes its context under MLOPS_HOME with wheels: drop --output/"
                                    "--no-wheels.")
        return api.build(args.ref, base=args.base_image, gpu=args.gpu, extra_steps=_extra_steps(args),
                         progress=BuildLines())
    return api.package(args.ref, args.output, base=args.base_image, gpu=args.gpu, extra_steps=_extra_steps(args),
                       wheels=not args.no_wheels)


def _build(args: argparse.Namespace) -> Any:
    return api.build(args.ref, base=args.base_image, gpu=args.gpu, extra_steps=_extra_steps(args),
                     no_cache=args.no_cache, progress=BuildLines(args.log))


def _images(args: argparse.Namespace) -> Any:
    if not args.remove:
        return api.list_images(args.ref)
    gone = api.remove_images(args.ref)
    return Status(repr(gone), list(gone))


def _dockerfile_steps(args: argparse.Namespace) -> Any:
    count = api.set_dockerfile_steps(args.ref, read_text(args.file, "--file"))
    return Status(f"Stored {count} Dockerfile line(s) for {args.ref}; mlops build and mlops deploy --target docker "
                  "use them.", {"model": args.ref, "lines": count})


def _image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS.")
    p.add_argument("--base-image", metavar="IMAGE", help="Base image (default: $MLOPS_BASE_IMAGE or python:3.11-slim).")
    p.add_argument("--gpu", action="store_true", help="Use a CUDA-capable base image.")
    p.add_argument("--extra-steps", metavar="FILE", help="A file of Dockerfile instructions to run after the base "
                                                         "(default: those of mlops dockerfile-steps).")


def add_verbs(verbs: Verbs) -> None:
    """Add this family's verbs."""
    p = verbs.add("package", _package, "Write a deterministic Docker build context for a model version.")
    _image_options(p)
    p.add_argument("--output", "-o", metavar="DIR", help="Where to write the build context (default: under "
                                                         "MLOPS_HOME).")
    p.add_argument("--no-wheels", action="store_true",
                   help="Do not download dependencies as wheels (the build then needs network access to PyPI).")
    p.add_argument("--build", action="store_true", help="Then build the image (as mlops build does).")

    p = verbs.add("build", _build, "Build a model version's Docker image, tag it mlops/NAME:VERSION-DIGEST, record "
                                   "it (steps on standard error).")
    _image_options(p)
    p.add_argument("--no-cache", action="store_true", help="Rebuild every layer.")
    p.add_argument("--log", action="store_true", help="Print the whole build output on standard error, not only "
                                                      "the steps.")

    p = verbs.add("images", _images, "List the Docker images built for model versions, or remove them.")
    p.add_argument("ref", nargs="?", help="NAME (every version), NAME:VERSION or NAME@ALIAS (default: every model).")
    p.add_argument("--remove", action="store_true", help="Remove those images from the engine (not used by a live "
                                                         "deployment) and forget them.")

    p = verbs.add("dockerfile-steps", _dockerfile_steps, "Store Dockerfile instructions (RUN apt-get ..., ENV ...) "
                                                         "for the model's images, run right after FROM.")
    p.add_argument("ref", help="NAME (every version) or NAME:VERSION (one version).")
    p.add_argument("--file", "-f", required=True, metavar="FILE",
                   help="The instructions, one a line ('-': standard input); an empty file removes them.")
