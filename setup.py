"""Installs the axial_deeplab_tf package."""

import setuptools

setuptools.setup(
    name="axial_deeplab_tf",
    version="0.1.0",
    description=("Position-sensitive axial attention, Axial-DeepLab panoptic "
                 "segmentation, SegNeXt and ISANet on TensorFlow 2."),
    packages=setuptools.find_packages(include=["axial_deeplab_tf",
                                               "axial_deeplab_tf.*"]),
    package_data={"axial_deeplab_tf": ["../gin/*/*.gin",
                                       "ops/kernels/*.cc"]},
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
        "test": [
            "pytest",
            "pytest-xdist",
            "hypothesis",
            "cityscapesscripts",
            "torch==2.13.0",
            "jax[cpu]==0.10.2",
        ],
    },
)
