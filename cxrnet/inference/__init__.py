"""Calling new, unlabelled films: inputs, scorers (PyTorch or ONNX Runtime), export, Grad-CAM."""
