"""Installs the netoffload package and its console script (dev and tests).

dom0 does not use this: the RPM installs the package to a private path
(see pack/netoffload.spec). The version is read from the package, the single
version source, without importing it.
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, "netoffload", "__init__.py")) as handle:
        match = re.search(r'^__version__ = "([^"]+)"$', handle.read(), re.M)
    return match.group(1)


setup(
    name="netoffload",
    version=read_version(),
    description="Pool-wide NIC offload policy for XenServer and XCP-ng",
    packages=find_packages(include=["netoffload", "netoffload.*"]),
    python_requires=">=3.6",
    entry_points={"console_scripts": ["netoffload = netoffload.cli:main"]},
)
