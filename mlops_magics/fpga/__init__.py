"""The FPGA engine: narrow number formats, a compiler from ONNX to a Brainwave-style instruction set, an emulator
that runs the program in numpy, and a latency model. Plain Python and numpy (``ml_dtypes`` for the element types);
every latency it reports is emulated, never measured on an FPGA.
"""
