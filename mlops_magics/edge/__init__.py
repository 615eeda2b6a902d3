"""The edge target's engine: the IoT Edge deployment manifest and the lean module image.

``manifest`` builds and validates an Azure IoT Edge deployment manifest (schema 2.0) for a model module;
``module`` turns a registered version into a lean module image (the ONNX version of the model, onnxruntime,
numpy and the scoring server, no scikit-learn), converting it on the way as ``%onnx`` does when it is not ONNX.
"""
