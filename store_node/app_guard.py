"""Only the store's own code runs in the store: the SuperNode refuses any other app bundle.

A Flower SuperNode installs and runs whatever app bundle (FAB) the SuperLink hands it: the
bundle is unpacked into ``$FLWR_HOME/apps``, put first on ``sys.path`` of the
``flwr-clientapp`` process, and its ``clientapp`` component is imported. Whoever controls the
coordinator would thus run code in every store, next to ``store.key`` and ``gallery.db``.

loyalnet's own bundle carries no code at all (``coordinator.flower_app``): one
``pyproject.toml`` whose ``clientapp`` component names the ClientApp installed in the store's
environment. So the store checks the bundle's *content*, not who sent or signed it
(:func:`bundle_problems`). A bundle is accepted only when

- its zip archive holds exactly ``pyproject.toml`` and Flower's manifest ``.info/CONTENT``
  (which lists just that file, with its sha256): no ``.py`` file, no other file at all;
- its publisher is ``loyalnet``, its name ``loyalnet-federated``, its version a plain version
  string (those three name the folder Flower installs it in), and it has no dependencies;
- its components are ``clientapp = "store_node.client_app:app"`` exactly, and at most a
  ``serverapp`` (which never runs in a store);
- the run that ships it names that same bundle (publisher/name, version, sha256) and is no
  agent-app run.

Why a content check and not Flower's ``--trusted-entities`` signatures or an allow-list of
bundle hashes: a compromised coordinator holds whatever key the chain signs its bundles with,
so a signature proves who sent the bundle, not that it is harmless; and a bundle's hash changes
with every coordinator's run-config defaults (its folder, its settings) and every loyalnet
version, so a hash list would have to be re-distributed to every store for each of them, while
"no code, and the ClientApp is the installed one" stays true whoever builds the bundle. Flower's
``--trusted-entities`` can still be given to ``loyalnet-supernode``: it passes to Flower
unchanged, and a bundle must then pass both checks.

Where the check runs: ``loyalnet-supernode`` (:func:`main`) is ``flower-supernode`` with one
hook, installed before Flower starts. The SuperNode's fetch of a run's bundle is wrapped, and a
refused bundle is never stored in the node's state; so no task is created, no
``flwr-clientapp`` is started for the run, nothing of the bundle is written to disk, imported
or executed. The store's log says why (ERROR), and the coordinator gets an error reply to its
message (``ErrorCode.INVALID_FAB``, the reasons as text) instead of waiting for a timeout, just
as Flower answers a bundle its trusted entities did not sign. Every later message of that run
is refused the same way.

The hook wraps private functions of ``flwr.supernode.start_client_internal`` (flwr 1.42.0 is
pinned); :func:`install_guard` checks they are there and used, and refuses to start the
SuperNode otherwise, so a Flower upgrade cannot silently drop the check.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import tomllib
import zipfile
from collections.abc import Callable
from io import BytesIO
from logging import ERROR, INFO
from typing import Any, NoReturn

from flwr.app import Error, Message
from flwr.common import log
from flwr.common.constant import FAB_MAX_SIZE, ErrorCode
from flwr.supercore.constant import TaskType
from flwr.supercore.fab import Fab
from flwr.supercore.run import Run

from loyalnet.errors import LoyalnetError

PUBLISHER = "loyalnet"
APP_NAME = "loyalnet-federated"
CLIENT_APP = "store_node.client_app:app"
"""What the accepted bundle names: the same values as ``coordinator.flower_app`` writes (a
test checks the two agree; the store imports no coordinator code)."""
PYPROJECT = "pyproject.toml"
MANIFEST = ".info/CONTENT"
MAX_PYPROJECT_BYTES = 256 * 1024
"""loyalnet's pyproject.toml is about a kilobyte; a larger one is no bundle of ours."""
_VERSION = re.compile(r"^[0-9]+(\.[0-9A-Za-z]+)*([+-][0-9A-Za-z.]+)?$")
_SHOWN_NAMES = 8
_GUARD_ATTRIBUTE = "__loyalnet_app_guard__"


class AppGuardError(LoyalnetError):
    """The installed Flower is not the one the bundle check was written for."""


class BundleRefusedError(Exception):
    """A run's app bundle failed the store's check: raised in the SuperNode's fetch of it, so
    Flower never stores it, and answered there with an error reply."""

    def __init__(self, run_id: int, fab_hash: str, problems: list[str]) -> None:
        self.run_id = run_id
        self.fab_hash = fab_hash
        self.problems = problems
        super().__init__(f"run {run_id}: {'; '.join(problems)}")


def bundle_problems(content: bytes, run: Run | None = None, served_hash: str = "") -> list[str]:
    """Why the store must not install the app bundle ``content``; empty when it may.

    Args:
        content: the FAB's bytes as the SuperLink served them.
        run: the run that ships it, as the SuperLink described it; its bundle id, version and
            hash must name this very bundle (they choose the folder the ClientApp is loaded
            from), and it must be no agent-app run.
        served_hash: the hash the SuperLink gave with the bundle; must be its sha256.

    The check only reads the archive's directory and its pyproject.toml: nothing of the
    bundle is extracted, imported or executed.
    """
    if len(content) > FAB_MAX_SIZE:
        return [f"it is {len(content):,} bytes, more than Flower's {FAB_MAX_SIZE:,}"]
    try:
        archive = zipfile.ZipFile(BytesIO(content))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return ["it is not a zip archive"]
    with archive:
        entries = archive.infolist()
        names = [entry.filename for entry in entries]
        problems = _file_problems(names)
        ours = {PYPROJECT, MANIFEST}
        if not ours <= set(names):
            return problems
        # The declared size bounds what zipfile reads: no decompression bomb gets through.
        if any(e.file_size > MAX_PYPROJECT_BYTES for e in entries if e.filename in ours):
            return [
                *problems,
                f"its {PYPROJECT} or manifest is larger than {MAX_PYPROJECT_BYTES:,} bytes",
            ]
        try:
            pyproject = archive.read(PYPROJECT)
            manifest = archive.read(MANIFEST)
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError) as err:
            return [f"it cannot be read: {err}"]
    if not problems:  # with other files in it, its manifest lists them too: said already
        problems += _manifest_problems(manifest, pyproject)
    try:
        config = tomllib.loads(pyproject.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        return [*problems, f"its {PYPROJECT} is not valid TOML: {err}"]
    problems += _config_problems(config)
    sha256 = hashlib.sha256(content).hexdigest()
    if served_hash and served_hash != sha256:
        problems.append(
            f"it was served as {served_hash[:12]}... but its sha256 is {sha256[:12]}..."
        )
    if run is not None:
        problems += _run_problems(run, config, sha256)
    return problems


def _file_problems(names: list[str]) -> list[str]:
    """Exactly pyproject.toml and the manifest: any other file could be imported."""
    problems = []
    if len(set(names)) != len(names):
        problems.append("it names a file twice")
    others = sorted(set(names) - {PYPROJECT, MANIFEST})
    if others:
        shown = ", ".join(others[:_SHOWN_NAMES])
        if len(others) > _SHOWN_NAMES:
            shown += f" and {len(others) - _SHOWN_NAMES} more"
        problems.append(f"it holds files other than {PYPROJECT} (code or data): {shown}")
    problems += [f"it lacks {name}" for name in (PYPROJECT, MANIFEST) if name not in names]
    return problems


def _manifest_problems(manifest: bytes, pyproject: bytes) -> list[str]:
    """Flower's manifest must list just pyproject.toml, with that file's sha256."""
    expected = hashlib.sha256(pyproject).hexdigest()
    lines = manifest.decode("utf-8", errors="replace").strip().splitlines()
    fields = [line.split(",") for line in lines]
    if len(fields) != 1 or len(fields[0]) != 3 or fields[0][:2] != [PYPROJECT, expected]:
        return [f"its manifest {MANIFEST} does not list exactly {PYPROJECT} with its sha256"]
    return []


def _config_problems(config: dict[str, Any]) -> list[str]:
    """The pyproject.toml must describe loyalnet's app, pointing at the installed ClientApp."""
    project = _table(config, "project")
    app = _table(_table(_table(config, "tool"), "flwr"), "app")
    components = _table(app, "components")
    problems = []
    if app.get("publisher") != PUBLISHER:
        problems.append(f"its publisher is {app.get('publisher')!r}, not {PUBLISHER!r}")
    if project.get("name") != APP_NAME:
        problems.append(f"its name is {project.get('name')!r}, not {APP_NAME!r}")
    version = project.get("version")
    if not isinstance(version, str) or not _VERSION.match(version):
        problems.append(f"its version {version!r} is no plain version string")
    if project.get("dependencies", []) != []:
        problems.append("it lists dependencies (they would be installed and run in the store)")
    if components.get("clientapp") != CLIENT_APP:
        problems.append(
            f"its clientapp component is {components.get('clientapp')!r}, not {CLIENT_APP!r}"
        )
    extra = sorted(set(components) - {"clientapp", "serverapp"})
    if extra:
        problems.append(f"it has components other than clientapp and serverapp: {extra}")
    return problems


def _run_problems(run: Run, config: dict[str, Any], sha256: str) -> list[str]:
    """The run must name this bundle: Flower loads the ClientApp from the folder they name."""
    project = _table(config, "project")
    bundle_id = f"{_table(_table(_table(config, 'tool'), 'flwr'), 'app').get('publisher')}/"
    bundle_id += str(project.get("name"))
    problems = []
    if run.fab_hash != sha256:
        problems.append(f"run {run.run_id} names bundle {run.fab_hash[:12]}..., not this one")
    if run.fab_id != bundle_id or run.fab_version != project.get("version"):
        problems.append(
            f"run {run.run_id} names app {run.fab_id!r} version {run.fab_version!r}, not "
            f"{bundle_id!r} version {project.get('version')!r}"
        )
    if run.primary_task_type == TaskType.AGENT_APP:
        problems.append(f"run {run.run_id} is an agent-app run, not a ClientApp run")
    return problems


def _table(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key, {})
    return value if isinstance(value, dict) else {}


# The SuperNode hook -------------------------------------------------------------------------


def _guard(pull_and_store: Callable[..., int | None]) -> Callable[..., int | None]:
    """Wrap Flower's ``_pull_and_store_message`` so each run's bundle is checked on arrival.

    Flower passes it, among others, ``receive`` (the next message),
    ``get_run`` and ``get_fab`` (a run's description and bundle, fetched once per run, before
    the bundle is stored). The wrapper remembers the message and the run, checks the bundle in
    ``get_fab``, and on refusal does what Flower does for an unsigned bundle: logs, puts an
    error reply to the message into the node's state (Flower's loop sends it) and returns.
    """

    signature = inspect.signature(pull_and_store)

    @functools.wraps(pull_and_store)
    def guarded(*args: Any, **kwargs: Any) -> int | None:
        from flwr.supernode import start_client_internal as flower

        kwargs = dict(signature.bind(*args, **kwargs).arguments)
        receive: Callable[[], tuple[Message, Any] | None] = kwargs["receive"]
        get_run: Callable[[int], Run] = kwargs["get_run"]
        get_fab: Callable[[str, int], Fab] = kwargs["get_fab"]
        received: list[Message] = []
        runs: dict[int, Run] = {}

        def receive_and_keep() -> tuple[Message, Any] | None:
            got = receive()
            if got is not None:
                received.append(got[0])
            return got

        def get_run_and_keep(run_id: int) -> Run:
            runs[run_id] = get_run(run_id)
            return runs[run_id]

        def get_checked_fab(fab_hash: str, run_id: int) -> Fab:
            fab = get_fab(fab_hash, run_id)
            run = runs.get(run_id) or Run.create_empty(run_id)
            try:
                problems = bundle_problems(fab.content, run, fab.hash_str)
            except Exception as err:  # a malformed archive must not take the SuperNode down
                problems = [f"it could not be checked ({type(err).__name__}: {err})"]
            if problems:
                raise BundleRefusedError(run_id, fab_hash, problems)
            log(INFO, "App bundle %s... of run %s passed the store's check.", fab_hash[:12], run_id)
            return fab

        kwargs.update(receive=receive_and_keep, get_run=get_run_and_keep, get_fab=get_checked_fab)
        try:
            return pull_and_store(**kwargs)
        except BundleRefusedError as refused:
            reasons = "; ".join(refused.problems)
            log(
                ERROR,
                "Refused the app bundle %s... of run %s: %s. Nothing of it was installed or "
                "run; this store runs only the ClientApp installed with loyalnet. If the chain "
                "launched it, its coordinator must send the app `loyalnet` writes "
                "(coordinator/flower_app.py); otherwise treat the coordinator as compromised.",
                refused.fab_hash[:12],
                refused.run_id,
                reasons,
            )
            reply = Message(
                Error(ErrorCode.INVALID_FAB, f"the store refused the app bundle: {reasons}"),
                reply_to=received[-1],
            )
            flower._insert_message(reply, kwargs["state"], kwargs["object_store"])
            return refused.run_id

    setattr(guarded, _GUARD_ATTRIBUTE, True)
    return guarded


def install_guard() -> None:
    """Put the bundle check into this process's Flower SuperNode; idempotent.

    Raises:
        AppGuardError: the installed Flower lacks the functions the hook wraps, or no longer
            calls them, so the check could not be guaranteed.
    """
    from flwr.supernode import start_client_internal as flower

    pull_and_store = getattr(flower, "_pull_and_store_message", None)
    if getattr(pull_and_store, _GUARD_ATTRIBUTE, False):
        return
    used = flower.start_client_internal.__code__.co_names
    if (
        pull_and_store is None
        or not callable(getattr(flower, "_insert_message", None))
        or "_pull_and_store_message" not in used
    ):
        raise AppGuardError(
            "the installed Flower SuperNode does not fetch app bundles the way the store's "
            "bundle check expects (written for flwr 1.42.0); install the flwr version "
            "loyalnet pins (`pip install -e .` in the store's environment)."
        )
    flower._pull_and_store_message = _guard(pull_and_store)


def main() -> NoReturn:
    """``loyalnet-supernode``: ``flower-supernode`` (same options) that refuses foreign bundles
    and picks up a run's messages promptly (``store_node.prompt_pickup``).

    Use it instead of ``flower-supernode`` wherever a store's SuperNode runs.
    """
    import sys

    from flwr.supernode.cli import flower_supernode

    from store_node.prompt_pickup import PromptPickupError, install_prompt_pickup

    try:
        install_guard()
        install_prompt_pickup()
    except (AppGuardError, PromptPickupError) as err:
        print(f"loyalnet-supernode: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    flower_supernode()
    raise SystemExit(0)


if __name__ == "__main__":
    main()
