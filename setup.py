"""Install gn_det: `pip install -e ".[test]"`."""
from setuptools import find_packages, setup

setup(
    name="gn_det",
    version="0.1.0",
    description="Group / Switchable Normalization for Mask R-CNN and Faster R-CNN on torchvision",
    packages=find_packages(include=["gn_det", "gn_det.*"]),
    package_data={"gn_det": ["benchmark/*.yaml", "benchmark/*.csv", "checkpoint/*.csv"]},
    python_requires=">=3.10",  # torch 2.9's floor
    install_requires=[
        # Tested: torch 2.9.1 / torchvision 0.24.1 and 2.14.1 / 0.29.1 (the quick suite, CPU); the GPU
        # machine's 2.11 refuses eps <= 0 in batch norm, which tests/layers/test_strict_eps.py enforces.
        "torch>=2.9,<2.15",
        "torchvision>=0.24,<0.30",
        "fvcore>=0.1.5",
        "pycocotools>=2.0.6",
        "numpy",
        "Pillow",
        "PyYAML",
        "tqdm",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest>=7"],
        # TEST.EVAL_BACKEND "faster-coco-eval" (the default "auto" picks it when installed): pycocotools' COCOeval
        # in C++, the same AP, several times faster (benchmarks/bench_eval.py).
        "faster-coco-eval": ["faster-coco-eval>=1.8"],
        # detectron2's own pure-Python dependencies, for gn_det.detectron2; detectron2 itself installs from its
        # source (python -m pip install 'git+https://github.com/facebookresearch/detectron2.git').
        "detectron2": ["iopath", "omegaconf>=2.1", "hydra-core>=1.1", "cloudpickle", "tabulate", "termcolor>=1.1",
                       "yacs>=0.1.8"],
    },
)
