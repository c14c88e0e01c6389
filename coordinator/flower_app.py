"""The Flower app of a coordinator: a folder holding nothing but a generated pyproject.toml.

``flwr run APP_DIR`` bundles the app folder into a FAB (every ``.py``, ``.toml``, ``.md`` and
``.json`` in it) and ships it to the SuperLink and every SuperNode, where the component
references are imported. The folder written here holds only ``pyproject.toml``, whose
components name modules of the installed ``loyalnet`` package:

- the FAB is about a kilobyte, so no code, no weights and no store data can end up in it, and
  the ServerApp and ClientApps run exactly the loyalnet installed on each machine, not a
  second copy that the FAB would put first on ``sys.path``;
- the repository's pyproject.toml stays the packaging one, with no Flower tables;
- the run config's defaults (``coordinator.run_config``), the coordinator's folder included,
  are written where Flower reads them, so ``flwr run -c`` can override each one.

``dependencies`` is empty on purpose: the SuperLink runs with runtime dependency installation
disabled, and loyalnet with its CPU torch is installed where the apps run.
"""

from __future__ import annotations

from pathlib import Path

from coordinator.run_config import default_run_config
from coordinator.toml_text import toml_table
from loyalnet import __version__

APP_NAME = "loyalnet-federated"
"""The app's name, also its folder's: Flower wants letters, digits and hyphens."""
PUBLISHER = "loyalnet"
SERVER_APP = "coordinator.server_app:app"
CLIENT_APP = "store_node.client_app:app"


def write_flower_app(coordinator_dir: Path) -> Path:
    """Write (or rewrite) the app folder under ``coordinator_dir`` and return its path."""
    app_dir = coordinator_dir / APP_NAME
    app_dir.mkdir(parents=True, exist_ok=True)
    project = {
        "name": APP_NAME,
        "version": __version__,
        "description": "loyalnet federated fine-tuning of the face embedder",
        "license": "LicenseRef-loyalnet",
    }
    text = "\n".join(
        [
            "# Written by coordinator.flower_app; edits are lost. The code is the installed",
            "# loyalnet package's: see that module's docstring.",
            toml_table("project", project) + "dependencies = []\n",
            toml_table("tool.flwr.app", {"publisher": PUBLISHER}),
            toml_table(
                "tool.flwr.app.components", {"serverapp": SERVER_APP, "clientapp": CLIENT_APP}
            ),
            toml_table("tool.flwr.app.config", default_run_config(coordinator_dir.resolve())),
        ]
    )
    (app_dir / "pyproject.toml").write_text(text, encoding="utf-8")
    return app_dir
