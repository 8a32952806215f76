"""Install DuckDB's spatial extension from the duckdb-extension-spatial package, so
that bqemulator finds it without downloading it (run with .venv-bqemulator's python)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import duckdb_extension_spatial

package = Path(duckdb_extension_spatial.__file__).parent
[extension] = package.glob(f"extensions/v{duckdb.__version__}/spatial.duckdb_extension")
duckdb.sql(f"INSTALL '{extension}'")
duckdb.sql("LOAD spatial")
print(f"installed {extension.name} for duckdb {duckdb.__version__}")
