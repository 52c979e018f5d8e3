"""Install gn_det: `pip install -e ".[test]"`."""
from setuptools import find_packages, setup

setup(
    name="gn_det",
    version="0.1.0",
    description="Group / Switchable Normalization for Mask R-CNN and Faster R-CNN on torchvision",
    packages=find_packages(include=["gn_det", "gn_det.*"]),
    package_data={"gn_det": ["benchmark/*.yaml", "benchmark/*.csv", "checkpoint/*.csv"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore>=0.1.5",
        "pycocotools>=2.0.6",
        "numpy",
        "Pillow",
        "PyYAML",
        "tqdm",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={"test": ["pytest>=7"]},
)
