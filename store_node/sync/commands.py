"""Carrying out the chain's commands in the store, and what each one's receipt says.

Two commands come from the control plane (``loyalnet.chain.v1.Command``):

``EraseMember``
    ``Gallery.erase`` of the member. The receipt is the same whether the member was enrolled
    here or never was (an unknown id, or one the gallery could never hold): it must not reveal
    whether the member was ever a customer of this store. Its fields, and nothing else (no
    counts)::

        {"kind": "erase-member", "command_id", "request_id", "member_id", "store",
         "statement": ERASURE_STATEMENT, "done_at"}

    A receipt saying nothing remains is signed only once the deleted rows are wiped from the
    gallery's files. A busy gallery (another program holds its write lock) or a blocked wipe
    (another program reads an old snapshot) leaves the command not done, tried again on the
    next cycle; a retried erasure scrubs the gallery before it signs, since an earlier attempt
    may have deleted the member and been stopped before the wipe finished.

``AdoptModel``
    Version 0 switches back to the pretrained model (the store's own pinned weights; nothing is
    downloaded). Any other version is streamed with ``FetchModel`` into a temporary folder
    inside the store folder, checked against the command's size and sha256, written beside its
    manifest (``model-vNNNN.json``), read with ``store_node.model_check.read_model_file`` and
    adopted with ``store_node.retemplate.adopt_model`` under ``fine_tuned_version(state)``, as
    ``loyalnet store adopt`` does. The temporary files are deleted either way. A model that
    fails any check is refused, and the refusal audited in the gallery::

        {"kind": "adopt-model", "command_id", "store", "version",
         "outcome": "adopted" | "refused", "reason", "done_at"}

    (``reason`` is "" when adopted). After an adoption the decision threshold is calibrated as
    ``loyalnet store calibrate`` does with its defaults (LFW people with a single photo,
    ``DEFAULT_CALIBRATION_PEOPLE`` of them unless configured); a calibration that fails stays
    due in the outbox and is tried again later, without adopting again. Back on the pretrained
    model no calibration is needed: loyalnet ships its impostor scores, measured the same way.

A command of a kind this loyalnet does not know is answered with a refused receipt of kind
``unsupported``, so that it does not block the store's queue; the coordinator can send it
again after the store is upgraded.

Nothing here logs or raises a message naming a member: :class:`CommandNotDone` carries a reason
fit for the store's log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from loyalnet.chain.v1 import chain_pb2
from loyalnet.errors import LoyalnetError
from loyalnet.receipts import ERASURE_STATEMENT
from store_node.camera.visit_log import forget_member_visits
from store_node.config import StorePaths, read_config
from store_node.face.weights import MOBILEFACENET_VERSION, load_mobilefacenet
from store_node.gallery import (
    Gallery,
    GalleryBusyError,
    InvalidInputError,
    ScrubError,
    UnknownMemberError,
)
from store_node.gallery.records import AuditAction
from store_node.model_check import ModelCheckError, ReceivedModel, read_model_file
from store_node.retemplate import (
    AdoptionError,
    adopt_model,
    recognition_pipeline,
    recognition_version,
)
from store_node.threshold import (
    DEFAULT_CALIBRATION_PEOPLE,
    calibration_people,
    measure_impostor_scores,
)
from store_node.training import backbone_state, fine_tuned_version

ERASE_MEMBER = "erase-member"
ADOPT_MODEL = "adopt-model"
UNSUPPORTED = "unsupported"
ADOPTED = "adopted"
REFUSED = "refused"

DOWNLOAD_PREFIX = ".sync-download-"
"""Temporary folders of model downloads in the store folder; left-overs of a crash are removed
when the runner starts."""
MAX_MODEL_BYTES = 256 * 1024 * 1024
"""The largest model file a store downloads (bytes). The MobileFaceNet is about 4 MiB; the cap
keeps a faulty or hostile coordinator from filling the store's disk."""
MAX_REASON_CHARS = 500
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.pt")

ModelFetcher = Callable[[int], Iterable[chain_pb2.ModelChunk]]
"""Streams the chunks of a chain model version (``StoreSync.FetchModel``)."""


class CommandNotDone(LoyalnetError):
    """A command that could not be carried out yet; it is tried again on the next cycle.

    The message is fit for the store's log: it never names a member.
    """


@dataclass(frozen=True)
class CommandOutcome:
    """What carrying out a command gave.

    Attributes:
        fields: the receipt's fields (``loyalnet.receipts.sign_receipt`` adds the version).
        summary: one line for the store's log, naming no member.
        model_version: the chain's model version the store recognises with from now on, when
            the command changed it.
        calibration_due: the adopted model (store name) whose threshold is to be calibrated.
    """

    fields: dict[str, object]
    summary: str
    model_version: int | None = None
    calibration_due: str | None = None


def command_kind(command: chain_pb2.Command) -> str:
    """The receipt kind of ``command``: ``erase-member``, ``adopt-model`` or ``unsupported``."""
    action = command.WhichOneof("action")
    if action == "erase_member":
        return ERASE_MEMBER
    if action == "adopt_model":
        return ADOPT_MODEL
    return UNSUPPORTED


@dataclass
class CommandRunner:
    """Carries out commands in the store in ``paths`` (see the module docstring).

    Attributes:
        paths: the store folder.
        store_id: the store's name, as its receipts give it.
        fetch_model: streams a model version's chunks from the coordinator.
        calibration_people: how many strangers calibrate the threshold after an adoption
            (``loyalnet store calibrate --limit``); fewer is faster and less exact.
        threads: CPU threads for the face models (None: torch's default).
        home: the shared data folder (detector, pretrained weights, LFW); None finds it.
        clock: the current instant (UTC), for ``done_at``.
    """

    paths: StorePaths
    store_id: str
    fetch_model: ModelFetcher
    calibration_people: int = DEFAULT_CALIBRATION_PEOPLE
    threads: int | None = None
    home: Path | None = None
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))

    def __post_init__(self) -> None:
        for leftover in self.paths.root.glob(f"{DOWNLOAD_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def carry_out(self, command: chain_pb2.Command, attempts: int) -> CommandOutcome:
        """Carry out ``command``; ``attempts`` counts this one (see ``CommandRecord``).

        Raises:
            CommandNotDone: not carried out yet; try again on a later cycle.
            grpc.RpcError: a model download failed on the way (try again later).
        """
        kind = command_kind(command)
        if kind == ERASE_MEMBER:
            return self._erase(command, attempts)
        if kind == ADOPT_MODEL:
            return self._adopt(command)
        return CommandOutcome(
            {
                "kind": UNSUPPORTED,
                "command_id": command.command_id,
                "store": self.store_id,
                "outcome": REFUSED,
                "reason": "this store's loyalnet does not know this command; upgrade it, then "
                "send the command again",
                "done_at": self._done_at(),
            },
            f"command {command.command_id} is of a kind this loyalnet does not know: refused",
        )

    def calibrate(self, model_version: str) -> bool:
        """Calibrate the threshold of ``model_version`` as ``loyalnet store calibrate`` does.

        Returns:
            True when calibrated; False when the store no longer recognises with that model
            (a later adoption, whose own calibration follows).

        Raises:
            LoyalnetError: the calibration failed (e.g. the LFW photos are missing).
        """
        pipeline = recognition_pipeline(self.paths.root, self.home, threads=self.threads)
        if pipeline.model_version != model_version:
            return False
        crowd = calibration_people(self.home, limit=self.calibration_people)
        crowd = dict(list(crowd.items())[: self.calibration_people])
        scores = measure_impostor_scores(pipeline, crowd, f"LFW single-photo people ({len(crowd)})")
        config = read_config(self.paths)
        with Gallery.open(self.paths.database, self.paths.key) as gallery:
            gallery.set_calibration(scores, config.target_fpir)
        return True

    # -- erasure -------------------------------------------------------------------------

    def _erase(self, command: chain_pb2.Command, attempts: int) -> CommandOutcome:
        action = command.erase_member
        try:
            with Gallery.open(self.paths.database, self.paths.key) as gallery:
                try:
                    gallery.erase(action.member_id)
                except (UnknownMemberError, InvalidInputError):
                    # Not here (an id the gallery cannot hold was never here either). A retry
                    # may follow an attempt that deleted the member and stopped before the
                    # wipe: finish the wipe before saying nothing remains.
                    if attempts > 1:
                        gallery.scrub()
            forget_member_visits(self.paths.root, action.member_id)
        except GalleryBusyError as err:
            raise CommandNotDone(
                f"erasure command {command.command_id} not done yet: another program holds the "
                "gallery's write lock; nothing was erased"
            ) from err
        except ScrubError as err:
            raise CommandNotDone(
                f"erasure command {command.command_id} not done yet: the deleted rows cannot be "
                "wiped from the gallery's files while another program reads an old snapshot"
            ) from err
        except Exception as err:
            # Gallery messages may name the member: the log gets the error's type only.
            raise CommandNotDone(
                f"erasure command {command.command_id} not done yet: the gallery failed "
                f"({type(err).__name__}); see `loyalnet store check`"
            ) from err
        return CommandOutcome(
            {
                "kind": ERASE_MEMBER,
                "command_id": command.command_id,
                "request_id": action.request_id,
                "member_id": action.member_id,
                "store": self.store_id,
                "statement": ERASURE_STATEMENT,
                "done_at": self._done_at(),
            },
            f"erasure command {command.command_id} done",
        )

    # -- model adoption ------------------------------------------------------------------

    def _adopt(self, command: chain_pb2.Command) -> CommandOutcome:
        action = command.adopt_model
        if action.version == 0:
            return self._adopt_pretrained(command)
        workdir = Path(tempfile.mkdtemp(prefix=DOWNLOAD_PREFIX, dir=self.paths.root))
        try:
            try:
                received = self._receive(action, workdir)
            except ModelCheckError as err:
                self._audit_refusal(f"chain-v{action.version}", err)
                return self._refused(command, err)
            name = fine_tuned_version(received.state)
            try:
                report = adopt_model(
                    self.paths.root,
                    received.state,
                    name,
                    manifest=received.manifest,
                    home=self.home,
                )
            except (ModelCheckError, AdoptionError) as err:  # audited by adopt_model
                return self._refused(command, err)
            except LoyalnetError as err:
                raise CommandNotDone(
                    f"model command {command.command_id} not done yet: {err}"
                ) from err
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return CommandOutcome(
            self._adoption_fields(command, ADOPTED, ""),
            f"model command {command.command_id}: chain model v{action.version} adopted as "
            f"{report.model_version}; {len(report.retemplated)} member(s) re-templated, "
            f"{len(report.needs_reenrolment)} need to enrol again",
            model_version=action.version,
            calibration_due=report.model_version,
        )

    def _adopt_pretrained(self, command: chain_pb2.Command) -> CommandOutcome:
        """Back to the pretrained weights the store holds (pinned by sha256; no download)."""
        try:
            if recognition_version(self.paths.root) != MOBILEFACENET_VERSION:
                state = backbone_state(load_mobilefacenet(self.home))
                adopt_model(self.paths.root, state, MOBILEFACENET_VERSION, home=self.home)
        except (ModelCheckError, AdoptionError) as err:
            return self._refused(command, err)
        except LoyalnetError as err:
            raise CommandNotDone(f"model command {command.command_id} not done yet: {err}") from err
        return CommandOutcome(
            self._adoption_fields(command, ADOPTED, ""),
            f"model command {command.command_id}: back on the pretrained model "
            f"{MOBILEFACENET_VERSION}",
            model_version=0,
        )

    def _receive(self, action: chain_pb2.AdoptModel, workdir: Path) -> ReceivedModel:
        """Download, check and read the model of ``action`` into ``workdir``.

        Raises:
            ModelCheckError: the manifest, the size or the sha256 is wrong (a refusal).
            CommandNotDone: the coordinator's stream broke off (try again).
        """
        manifest = _manifest(action)
        weights = workdir / str(manifest["file"])
        try:
            self._download(action, weights)
        except grpc.RpcError as err:
            if err.code() is grpc.StatusCode.NOT_FOUND:
                raise ModelCheckError(
                    f"the coordinator has no model version {action.version} to download"
                ) from err
            raise
        weights.with_suffix(".json").write_text(action.manifest_json, encoding="utf-8")
        return read_model_file(weights)

    def _download(self, action: chain_pb2.AdoptModel, target: Path) -> None:
        """Stream the model into ``target``, checking offsets, size and sha256 on the way."""
        if action.size_bytes > MAX_MODEL_BYTES:
            raise ModelCheckError(
                f"model version {action.version} is {action.size_bytes} bytes, more than the "
                f"{MAX_MODEL_BYTES} a store downloads"
            )
        limit = action.size_bytes or MAX_MODEL_BYTES
        digest = hashlib.sha256()
        received = 0
        total: int | None = None
        with target.open("xb") as out:
            for chunk in self.fetch_model(action.version):
                if chunk.offset != received:
                    raise ModelCheckError(
                        f"the download of model version {action.version} skipped or repeated "
                        f"bytes (a chunk at offset {chunk.offset}, {received} received)"
                    )
                if total is None:
                    total = chunk.total_bytes
                received += len(chunk.data)
                if chunk.total_bytes != total or received > min(limit, total):
                    raise ModelCheckError(
                        f"the download of model version {action.version} is longer than the "
                        f"{min(limit, total)} bytes announced"
                    )
                digest.update(chunk.data)
                out.write(chunk.data)
        if received != (total or 0) or (action.size_bytes and received != action.size_bytes):
            raise ModelCheckError(
                f"the download of model version {action.version} gave {received} bytes; the "
                f"command says {action.size_bytes}"
            )
        if digest.hexdigest() != action.sha256.lower():
            raise ModelCheckError(
                f"the downloaded model version {action.version} has sha256 "
                f"{digest.hexdigest()[:12]}…, the command says {action.sha256[:12]}…: it was "
                "altered on the way or is another file; refused"
            )

    def _refused(self, command: chain_pb2.Command, error: LoyalnetError) -> CommandOutcome:
        reason = str(error).replace(str(self.paths.root), "<store>")[:MAX_REASON_CHARS]
        return CommandOutcome(
            self._adoption_fields(command, REFUSED, reason),
            f"model command {command.command_id}: chain model v{command.adopt_model.version} "
            f"refused: {reason}",
        )

    def _adoption_fields(
        self, command: chain_pb2.Command, outcome: str, reason: str
    ) -> dict[str, object]:
        return {
            "kind": ADOPT_MODEL,
            "command_id": command.command_id,
            "store": self.store_id,
            "version": command.adopt_model.version,
            "outcome": outcome,
            "reason": reason,
            "done_at": self._done_at(),
        }

    def _audit_refusal(self, label: str, error: LoyalnetError) -> None:
        """Audit a refusal found before ``adopt_model`` (which audits its own), like it does."""
        details = {"model_version": label, "reason": str(error)[:MAX_REASON_CHARS]}
        try:
            with Gallery.open(self.paths.database, self.paths.key) as gallery:
                gallery.record_store_event(AuditAction.MODEL_REFUSED, details)
        except LoyalnetError as audit_error:
            error.add_note(f"The refusal could not be audited: {audit_error}")

    def _done_at(self) -> str:
        return self.clock().astimezone(dt.UTC).isoformat(timespec="seconds")


def _manifest(action: chain_pb2.AdoptModel) -> dict[str, object]:
    """The command's manifest, if it is one for this version with a plain weight-file name.

    Raises:
        ModelCheckError: otherwise (a refusal).
    """
    try:
        manifest = json.loads(action.manifest_json)
    except ValueError as err:
        raise ModelCheckError(
            f"the manifest of model version {action.version} is not JSON"
        ) from err
    if not isinstance(manifest, dict):
        raise ModelCheckError(f"the manifest of model version {action.version} is no JSON object")
    if manifest.get("version") != action.version:
        raise ModelCheckError(
            f"the manifest is of model version {manifest.get('version')!r}, the command of "
            f"{action.version}"
        )
    name = manifest.get("file")
    if not isinstance(name, str) or _FILE_NAME.fullmatch(name) is None:
        raise ModelCheckError(
            f"the manifest of model version {action.version} names the weight file "
            f"{str(name)[:80]!r}, not a plain .pt file name"
        )
    return manifest
