"""Build: the pure-Python package plus the pybind11 step-segment packer (C++ only, no CUDA).

`kernels/` is shipped as `rairl.kernels`, never as a top-level `kernels`: that name is Hugging Face's
package, which transformers imports (`kernels/__init__.py` hands the name over to it from a checkout's root).
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

ext_modules = [
    Pybind11Extension(
        "rairl._segments",
        ["csrc/segments.cpp"],
        cxx_std=17,
        extra_compile_args=["-O3"],
    )
]

packages = [p for p in find_packages(include=["rairl", "rairl.*"])] + ["rairl.kernels"]

setup(
    packages=packages,
    package_dir={"rairl": "rairl", "rairl.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
)
