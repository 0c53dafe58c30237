"""Installs the image-classification pipeline and its pinned stack (resolves in minutes on Python 3.11)."""
from setuptools import setup

KFP = ["kfp==2.13.0", "kfp-kubernetes==1.4.0"]

setup(
    name="mnist-family-pipeline",
    version="0.1.0",
    description="A TFX-style production pipeline for MNIST-family image classifiers, with data validation at its heart",
    python_requires=">=3.10,<3.12",
    packages=["engine", "components", "pipeline", "schemas"],
    package_data={"schemas": ["*.pbtxt"]},
    install_requires=[
        # Pinned together: without the apache-beam and pyarrow pins pip backtracks for over ten minutes,
        # and TFDV newer than 1.16.1 has no wheel for this platform.
        "tensorflow==2.16.2",
        "tensorflow-data-validation==1.16.1",
        "apache-beam[gcp]==2.63.0",
        "pyarrow==10.0.1",
        "numpy<2",
        "pandas<2",
        "tensorflow-datasets==4.9.10",
        "importlib_resources",
        "keras-tuner[bayesian]==1.4.8",
        "keras==3.15.1",
        "ml-metadata==1.16.0",
        "pyyaml>=6",
    ],
    extras_require={
        # kfp 2.14 and newer need protobuf 6, which TensorFlow 2.16 refuses; kfp-kubernetes mounts the root's volume.
        "kfp": KFP,
        # CI runs the Kubeflow tests rather than skipping them; xdist runs two test files at once (pytest.ini).
        "test": ["pytest>=8", "pytest-xdist==3.8.0", *KFP],
    },
    entry_points={"console_scripts": ["mnist-pipeline=pipeline.cli:main"]},
)
