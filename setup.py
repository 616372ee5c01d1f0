"""Build hook: put the repository's shipped files into the wheel as package data.

The checkpoints, product configs and puzzle data stay where the repository, its docs and tests
name them (checkpoints/, configs/, data/); at build time they are copied to upo/_shipped/ in the
wheel, where upo.assets finds them with importlib.resources. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# What travels: every built-in checkpoint, the product configs and the committed puzzle files.
SHIPPED = {"checkpoints": "*/*", "configs": "*.yaml", "data": "*.jsonl"}


class build_py_with_assets(build_py):
    def run(self):
        super().run()
        # An editable install reads the repository's own directories (upo.assets): no copy.
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "upo" / "_shipped"
        for folder, pattern in SHIPPED.items():
            for source in sorted((HERE / folder).glob(pattern)):
                if source.is_file():
                    dest = target / source.relative_to(HERE)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, dest)


setup(cmdclass={"build_py": build_py_with_assets})
