"""Run the test suite with every service it needs (what `make test` calls).

PostgreSQL and Redis are embedded (started by the tests themselves). Neo4j is started from
Maven-resolved jars when ``NEO4J_URI`` is unset and stopped afterwards.
"""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    args = ["-m", "pytest", "-v", *sys.argv[1:]]
    return subprocess.call([sys.executable, *args])


if __name__ == "__main__":
    sys.exit(main())
