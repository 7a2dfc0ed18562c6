"""Installs the axial_deeplab_tf package."""

import setuptools

setuptools.setup(
    name="axial_deeplab_tf",
    version="0.1.0",
    description=("Position-sensitive axial attention, Axial-DeepLab panoptic "
                 "segmentation, SegNeXt and ISANet on TensorFlow 2."),
    # The experiments live in the repository's top-level gin/ folder and
    # install as axial_deeplab_tf/experiments/ (package data, found with
    # importlib.resources; see tasks/experiment.experiments_root).
    packages=(setuptools.find_packages(include=["axial_deeplab_tf",
                                                "axial_deeplab_tf.*"])
              + ["axial_deeplab_tf.experiments"]),
    package_dir={"axial_deeplab_tf.experiments": "gin"},
    package_data={"axial_deeplab_tf": ["ops/kernels/*.cc"],
                  "axial_deeplab_tf.experiments": ["*/*.gin"]},
    entry_points={"console_scripts": [
        "axial-deeplab = axial_deeplab_tf.cli.main:run",
    ]},
    python_requires=">=3.9",
    install_requires=[
        "tensorflow~=2.20.0",
        "tf-keras~=2.20.0",
        "tf-models-official~=2.20.0",
        "gin-config>=0.5",
        "absl-py",
        "numpy",
        "Pillow",
        "pycocotools",
        "matplotlib",
    ],
    extras_require={
        # Importers of PyTorch-published checkpoints (torch.load with
        # weights_only=True needs torch >= 1.13).
        "importers": ["torch>=1.13"],
        # LiteRT / ONNX exports and their runtimes.
        "export": [
            "tf2onnx>=1.17",
            "onnx",
            "onnxruntime",
            "ai-edge-litert",
        ],
        "test": [
            "pytest",
            "pytest-xdist",
            "hypothesis",
            "cityscapesscripts",
            "torch==2.13.0",
            "tf2onnx>=1.17",
            "onnx",
            "onnxruntime",
            "ai-edge-litert",
            "jax[cpu]==0.10.2",
        ],
    },
)
