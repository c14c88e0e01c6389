"""Process-wide settings, read once from the environment and an optional config file.

Precedence: an explicit command-line option, then an environment variable, then the user's
config file (``$LOYALNET_CONFIG``, default ``~/.config/loyalnet/config.toml``), then the default.

```toml
# ~/.config/loyalnet/config.toml
store_dir = "/var/lib/loyalnet/store"
coordinator_dir = "/var/lib/loyalnet/coordinator"
threads = 2
```
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loyalnet.errors import LoyalnetError

STORE_ENV = "LOYALNET_STORE"
COORDINATOR_ENV = "LOYALNET_COORDINATOR"
CONFIG_ENV = "LOYALNET_CONFIG"
THREADS_ENV = "LOYALNET_THREADS"
CACHE_ENV = "LOYALNET_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/loyalnet")
DEFAULT_CONFIG_PATH = Path("~/.config/loyalnet/config.toml")
DEFAULT_STORE_DIR = Path("store")
DEFAULT_COORDINATOR_DIR = Path("coordinator-home")


@dataclass(frozen=True)
class Settings:
    """Where this machine keeps its store (and, on the chain's server, the coordinator's
    folder) and how many CPU threads inference may use."""

    store_dir: Path
    threads: int | None
    coordinator_dir: Path = DEFAULT_COORDINATOR_DIR

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; a broken config file is an error, a missing one is not."""
        env = os.environ if env is None else env
        file_values = _read_config_file(Path(env.get(CONFIG_ENV, DEFAULT_CONFIG_PATH)))
        store_dir = env.get(STORE_ENV) or file_values.get("store_dir") or DEFAULT_STORE_DIR
        coordinator_dir = (
            env.get(COORDINATOR_ENV)
            or file_values.get("coordinator_dir")
            or DEFAULT_COORDINATOR_DIR
        )
        threads_value = env.get(THREADS_ENV) or file_values.get("threads")
        return cls(
            store_dir=Path(str(store_dir)).expanduser(),
            threads=_threads(threads_value),
            coordinator_dir=Path(str(coordinator_dir)).expanduser(),
        )


def cache_home(env: Mapping[str, str] | None = None) -> Path:
    """Where derived files that can be rebuilt live (exported ONNX graphs): ``$LOYALNET_CACHE``,
    else ``$XDG_CACHE_HOME/loyalnet``, else ``~/.cache/loyalnet``."""
    env = os.environ if env is None else env
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "loyalnet"
    return DEFAULT_CACHE_DIR.expanduser()


def _read_config_file(path: Path) -> dict[str, Any]:
    path = path.expanduser()
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise LoyalnetError(
            f"config file {path} is not valid TOML ({err}); fix or remove it."
        ) from err


def _threads(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        threads = int(str(value))
    except ValueError:
        threads = 0
    if threads < 1:
        raise LoyalnetError(f"threads must be a whole number >= 1, got {value!r}.")
    return threads
