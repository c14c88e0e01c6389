"""The coordinator's Flower ServerApp: fine-tune the face embedder across the chain's stores.

One run: start from the pretrained embedder's weights, run ``num-rounds`` rounds of FedAvg (or
FedProx) over every connected store, and save the final global model (moved back towards the
pretrained one by ``release-mix``, :mod:`coordinator.release_mix`) as the next model version
in ``<coordinator-dir>/models``. The run config keys are described in
:mod:`coordinator.run_config`; the app is launched through ``coordinator.flower_app``.

With ``dp-noise-multiplier`` > 0 the run is differentially private at the store level
(:mod:`coordinator.store_privacy`): each round's metrics, and so the model version's
manifest, carry the ``epsilon`` spent so far at ``dp-delta``. Without it they carry neither.

The coordinator handles arrays, metrics and configuration only: no face code is imported here.
"""

from __future__ import annotations

from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, ConfigRecordValues, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from coordinator.errors import NoStoreTrainedError
from coordinator.home import CoordinatorHome
from coordinator.initial_model import pretrained_backbone
from coordinator.model_versions import save_model_version
from coordinator.pki import load_model_signing_key
from coordinator.prompt_grid import PromptGrid
from coordinator.release_mix import released_model
from coordinator.round_reports import RegistryRoundReports
from coordinator.run_config import FederationSettings
from coordinator.strategy import build_strategy
from loyalnet.packed_backbone import BackboneLayout

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federated rounds and save the resulting model version."""
    settings = FederationSettings.from_run_config(context.run_config)
    # What every store trains with; FedProx adds its proximal-mu to it.
    round_config: dict[str, ConfigRecordValues] = dict(settings.round_config())
    home = CoordinatorHome(settings.coordinator_dir)
    reports = (
        RegistryRoundReports(home.database_url(), settings.registry_run_id)
        if settings.registry_run_id
        else None
    )
    pretrained = pretrained_backbone()
    # Three flat arrays on the wire instead of one Flower object per tensor.
    layout = BackboneLayout.of(pretrained)
    initial = ArrayRecord(layout.pack(pretrained))
    try:
        result = build_strategy(settings, on_round=reports).start(
            grid=PromptGrid(grid),
            initial_arrays=initial,
            num_rounds=settings.num_rounds,
            timeout=settings.round_timeout_seconds,
            train_config=ConfigRecord(round_config),
        )
    finally:
        if reports is not None:
            reports.close()
    metrics = {round_: dict(record) for round_, record in result.train_metrics_clientapp.items()}
    # Result.arrays stays empty until some round aggregates an update.
    if not result.arrays:
        raise NoStoreTrainedError(
            f"no store sent an update in {settings.num_rounds} round(s) (per round: {metrics}); "
            "no model version was written. Check the stores' logs and min-members."
        )
    tls = home.tls
    signing_key = load_model_signing_key(tls)
    if signing_key is None:
        log(
            WARNING,
            "no model-signing key at %s: the model version is saved unsigned, and stores that "
            "hold the chain's public key will refuse it",
            tls.model_signing_key,
        )
    released = released_model(initial, result.arrays, settings.release_mix)
    if settings.release_mix < 1:
        log(INFO, "released model: %g of the run's change kept (release-mix)", settings.release_mix)
    saved = save_model_version(
        settings.models_dir,
        layout.unpack(released.to_torch_state_dict()),
        context.run_config,
        metrics,
        signing_key=signing_key,
    )
    log(INFO, "model version %d saved: %s (sha256 %s)", saved.version, saved.path, saved.sha256)
    if settings.private:
        last = metrics[max(metrics)]
        log(
            INFO,
            "differential privacy: epsilon %s at delta %s over the run (noise multiplier %s, "
            "clipping norm %s)",
            last.get("epsilon"),
            last.get("dp-delta"),
            settings.dp_noise_multiplier,
            settings.dp_clipping_norm,
        )
