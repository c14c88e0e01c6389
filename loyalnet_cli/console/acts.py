"""The admin's acts: erase, promote, roll back, train. Each asks first, then calls the
coordinator in a worker thread and reports back on the UI thread.

A viewer's console hides these keys; should one run anyway (before the coordinator said who
you are), the coordinator's refusal is shown as a notification, nothing else happens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from textual.app import App

from coordinator.admin_client import AdminError
from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.format import version_name
from loyalnet_cli.console.link import AdminSource, Clock, ConsoleLink
from loyalnet_cli.console.messages import RunOnUi
from loyalnet_cli.console.modals.confirm import ConfirmScreen
from loyalnet_cli.console.modals.erase_form import EraseForm
from loyalnet_cli.console.modals.erasure_progress import ErasureProgress
from loyalnet_cli.console.modals.train_form import TrainForm
from loyalnet_cli.console.rollout import PROMOTED, ROLLED_BACK, rollback_target, rollout_body
from loyalnet_cli.console.snapshot import ChainSnapshot

_Result = TypeVar("_Result")
ROLLOUT_HISTORY = 1000
"""Promotions and rollbacks read to find a rollback's target (the coordinator's page limit)."""


class Acts:
    """The flows behind the ``e``, ``p``, ``r`` and ``t`` keys."""

    def __init__(
        self,
        app: App[None],
        link: ConsoleLink,
        latest: Callable[[], ChainSnapshot | None],
        clock: Clock,
        refresh: Callable[[], None],
    ) -> None:
        self._app = app
        self._link = link
        self.latest = latest
        self._clock = clock
        self._refresh = refresh

    # -- erase ---------------------------------------------------------------------------

    def erase(self) -> None:
        self._app.push_screen(EraseForm(), self._erase)

    def _erase(self, member_id: str | None) -> None:
        if member_id is not None:
            self.run("erasure request", lambda c: c.erase(member_id), self._erasure_started)

    def _erasure_started(self, erasure: chain_pb2.Erasure) -> None:
        self._app.push_screen(ErasureProgress(erasure, self._clock()))

    # -- promote and roll back -----------------------------------------------------------

    def promote(self, version: int | None) -> None:
        snapshot = self.latest()
        if snapshot is None or version is None:
            self._app.notify("Select a model version first.", severity="warning")
            return
        name = version_name(version)
        if version == snapshot.models.promoted_version:
            self._app.notify(f"{name} is promoted already; nothing would change.")
            return
        model = next((m for m in snapshot.models.models if m.version == version), None)
        if model is not None and not model.signature_verified:
            self._app.notify(
                f"{name} is not signed by the chain's key; stores would refuse it.",
                severity="error",
            )
            return
        question = ConfirmScreen(
            f"Promote {name}?", rollout_body(snapshot, version, "Promoting"), "Promote"
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.run(f"promotion of {name}", lambda c: c.promote(version), self._rolled_out)

        self._app.push_screen(question, answered)

    def rollback(self) -> None:
        # The target comes from the promotion history, read off the UI thread.
        self.run("rollback", _history, self._confirm_rollback)

    def _confirm_rollback(self, history: list[chain_pb2.AuditRecord]) -> None:
        target = rollback_target(history)
        snapshot = self.latest()
        if target is None or snapshot is None:
            self._app.notify("Nothing to roll back: no promotion is standing.")
            return
        current = version_name(snapshot.models.promoted_version)
        question = ConfirmScreen(
            f"Roll back from {current} to {version_name(target)}?",
            rollout_body(snapshot, target, "Rolling back"),
            "Roll back",
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.run("rollback", lambda c: c.rollback(), self._rolled_out)

        self._app.push_screen(question, answered)

    def _rolled_out(self, rollout: chain_pb2.Rollout) -> None:
        self._app.notify(
            f"{version_name(rollout.version)} rolled out (was "
            f"{version_name(rollout.previous_version)}): {rollout.stores_commanded} stores "
            "told to adopt it.",
            title="model rollout",
            markup=False,
        )

    # -- train ---------------------------------------------------------------------------

    def train(self) -> None:
        self._app.push_screen(TrainForm(), self._train)

    def _train(self, rounds: int | None) -> None:
        if rounds is not None:
            self.run("training run", lambda c: c.train(rounds), self._training_started)

    def _training_started(self, run: chain_pb2.TrainingRun) -> None:
        self._app.notify(
            f"training run {run.run_id} started: {run.rounds_planned} rounds.", title="training"
        )

    # -- the worker ----------------------------------------------------------------------

    def run(
        self,
        what: str,
        call: Callable[[AdminSource], _Result],
        then: Callable[[_Result], None],
    ) -> None:
        """Make ``call`` on a fresh connection in a worker thread, then ``then(result)`` on
        the UI thread; a refusal or failure becomes an error notification."""

        def work() -> None:
            client = self._link.connect()
            try:
                result = call(client)
            except Exception as err:  # shown, not raised: the console outlives one act
                text = str(err) if isinstance(err, AdminError) else f"{type(err).__name__}: {err}"
                self._app.post_message(RunOnUi(lambda: self._failed(what, text)))
                return
            finally:
                client.close()
            self._app.post_message(RunOnUi(lambda: then(result)))
            self._refresh()

        self._app.run_worker(work, thread=True, group="acts", name=what, exit_on_error=False)

    def _failed(self, what: str, message: str) -> None:
        self._app.notify(message, title=f"{what} failed", severity="error", markup=False)


def _history(client: AdminSource) -> list[chain_pb2.AuditRecord]:
    return client.audit(ROLLOUT_HISTORY, PROMOTED) + client.audit(ROLLOUT_HISTORY, ROLLED_BACK)
