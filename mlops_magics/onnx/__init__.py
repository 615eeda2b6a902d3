"""ONNX: conversion (convert.py) and its report (report.py)."""
