"""A store's folder and its settings file, ``store.toml``.

A store folder holds everything a store node keeps:

- ``gallery.db``: the SQLite gallery (members, consents, sealed templates and crops, audit);
- ``store.key``: the store's 256-bit AES key, mode 0600; without it the gallery is unreadable;
- ``store.toml``: the settings below, plain text, no secrets;
- once the store joined the chain's federation (``loyalnet store join``): ``node_key`` (its
  SuperNode's private key, mode 0600), ``node.pub`` (the public key the chain registers) and
  ``ca.crt`` (the chain's CA certificate, which the SuperLink's TLS certificate is checked by);
- once the chain admitted it to its control plane (``loyalnet store join --control-plane H:P
  --certificate F``): ``control-plane.crt``, the store's client certificate (public) for its
  own ``node_key``, and ``sync.db``, the outbox of ``loyalnet store serve``
  (``store_node.sync``).

``store.toml`` is read strictly: every key must be known, of its exact type and in its range,
or the file is refused with a message naming the file, the key, the value and what is valid.
A typo or a value that only breaks later (a ``retention_days`` the gallery refuses, so that a
member is enrolled without a consent) is caught when the store starts, not mid-enrolment. The
same checks run when a :class:`StoreConfig` is built in code. Types: a whole-number setting
takes a TOML integer only (``365``, not ``365.0``); a real-number setting takes an integer or a
float (``1`` is 1.0); ``true``/``false`` are never numbers.

The optional ``[training]`` table is the store's privacy floor (:class:`TrainingLimits`):
what a federated training round may ask of this store. A round asking for more is declined
before any training (``store_node.client_app``). A file without the table gets the defaults.

Each ``[[cameras]]`` table names one camera ``loyalnet store serve`` reads
(:class:`CameraSettings`); a store without one recognises photos only.
"""

from __future__ import annotations

import math
import re
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from loyalnet.errors import LoyalnetError
from store_node.gallery.gallery import MAX_RETENTION_DAYS
from store_node.trainer.answer import TRAINER_SOCKET_NAME

CONFIG_NAME = "store.toml"
DATABASE_NAME = "gallery.db"
KEY_NAME = "store.key"
CA_CERTIFICATE_NAME = "ca.crt"
CONTROL_PLANE_CERTIFICATE_NAME = "control-plane.crt"
TRAINING_TABLE = "training"
"""The ``store.toml`` table of the store's privacy floor (:class:`TrainingLimits`)."""
LOCAL_API_TABLE = "local_api"
"""The ``store.toml`` table of the store's local gRPC API (:class:`LocalApiSettings`)."""
DEFAULT_LOCAL_API = "127.0.0.1:7070"
CAMERAS_TABLE = "cameras"
"""The ``store.toml`` array of tables, one per camera (:class:`CameraSettings`)."""
MAX_CAMERA_FPS = 60.0
MAX_CAMERAS = 32

LABEL_MAX_CHARS = 64
MAX_MIN_MEMBERS = 1_000_000
MAX_LOCAL_EPOCHS = 100
# The coordinator's registration names (coordinator.home), so that the hint `register-store
# --name <store_id>` printed by `loyalnet store join` works as printed.
_STORE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


@dataclass(frozen=True)
class _Rule:
    """How one setting is checked: its kind, what is valid in words, and the range test.

    ``test`` sees only values of the right kind (ints for ``float`` settings included, which
    Python compares exactly, so a huge TOML integer cannot overflow a float conversion).
    """

    kind: type
    valid: str
    test: Callable[[Any], bool] = lambda _: True
    note: str = ""
    """A short comment written after the key in ``store.toml``."""
    optional: bool = False
    """None (no line in the file) is allowed."""


def _between(low: float, high: float) -> Callable[[Any], bool]:
    return lambda x: _finite(x) and low <= x <= high


def _above(low: float, high: float) -> Callable[[Any], bool]:
    return lambda x: _finite(x) and low < x <= high


def _finite(x: float) -> bool:
    return isinstance(x, int) or math.isfinite(x)


def _label(value: str) -> bool:
    return 0 < len(value) <= LABEL_MAX_CHARS and value.isprintable() and value == value.strip()


def _address(value: str, lowest_port: int = 1) -> bool:
    """``HOST:PORT`` (an IPv6 host in brackets), or "" for none."""
    if value == "":
        return True
    host, _, port = value.rpartition(":")
    return (
        len(value) <= 255
        and bool(host)
        and host.isprintable()
        and not any(c.isspace() for c in host)
        and port.isascii()
        and port.isdigit()
        and str(int(port)) == port
        and lowest_port <= int(port) <= 65535
    )


_STORE_RULES: dict[str, _Rule] = {
    "store_id": _Rule(
        str,
        "1 to 63 letters, digits, '-' or '_', starting with a letter or digit (the name the "
        'chain registers the store under), e.g. "store-042"',
        lambda x: _STORE_ID.fullmatch(x) is not None,
    ),
    "target_fpir": _Rule(float, "a number from 1e-6 to 0.5, e.g. 0.001", _between(1e-6, 0.5)),
    "policy_version": _Rule(
        str,
        f"a printable label of 1 to {LABEL_MAX_CHARS} characters without surrounding spaces, "
        'e.g. "2026-11"',
        _label,
    ),
    "retention_days": _Rule(
        int,
        f"a whole number of days from 1 to {MAX_RETENTION_DAYS}",
        _between(1, MAX_RETENTION_DAYS),
    ),
    "flip": _Rule(bool, "true or false"),
    "superlink": _Rule(
        str,
        'the SuperLink as "HOST:PORT" (port 1 to 65535), or "" before `loyalnet store join`',
        _address,
    ),
    "control_plane": _Rule(
        str,
        'the chain\'s control plane as "HOST:PORT" (port 1 to 65535), or "" before '
        "`loyalnet store join --control-plane`",
        _address,
    ),
}
# Written only when set: an older loyalnet refuses unknown keys, and a store that never joined
# a control plane should keep a store.toml it can still read.
_WRITTEN_WHEN_SET = frozenset({"control_plane"})

_TRAINING_RULES: dict[str, _Rule] = {
    "min_members": _Rule(
        int,
        f"a whole number from 2 to {MAX_MIN_MEMBERS}",
        _between(2, MAX_MIN_MEMBERS),
        "fewest consenting members a round may train on",
    ),
    "max_local_epochs": _Rule(
        int,
        f"a whole number from 1 to {MAX_LOCAL_EPOCHS}",
        _between(1, MAX_LOCAL_EPOCHS),
        "most passes over the crops a round may ask",
    ),
    "min_learning_rate": _Rule(
        float, "a number > 0 and <= 1", _above(0, 1), "lowest learning rate a round may ask"
    ),
    "max_learning_rate": _Rule(
        float, "a number > 0 and <= 1", _above(0, 1), "highest learning rate a round may ask"
    ),
    "require_frozen_batchnorm": _Rule(
        bool, "true or false", note="decline rounds that would send BatchNorm statistics"
    ),
    "require_clipping": _Rule(
        bool, "true or false", note="decline rounds without DP clipping (clipping_norm)"
    ),
    "max_clipping_norm": _Rule(
        float,
        "a number > 0, or no line at all for no maximum",
        lambda x: _finite(x) and x > 0,
        "largest clipping_norm a round may ask (needs require_clipping = true)",
        optional=True,
    ),
}


_CAMERA_RULES: dict[str, _Rule] = {
    "name": _Rule(
        str,
        f"a printable label of 1 to {LABEL_MAX_CHARS} characters without surrounding spaces, "
        'e.g. "entrance"',
        _label,
    ),
    "source": _Rule(
        str,
        "a camera index (0), an rtsp:// or http(s):// stream, a video file or a folder of images",
        lambda x: 0 < len(x) <= 1000 and x.isprintable(),
    ),
    "fps": _Rule(
        float,
        f"frames per second to look at, a number > 0 and <= {MAX_CAMERA_FPS:g}",
        _above(0, MAX_CAMERA_FPS),
    ),
    "smallest_face": _Rule(
        int,
        "the smallest face to recognise, as the pixel width of its box, 16 to 1000",
        _between(16, 1000),
    ),
}


def _file_name(value: str) -> bool:
    return len(value) <= 1000 and value.isprintable()


_LOCAL_API_RULES: dict[str, _Rule] = {
    "address": _Rule(
        str,
        f'"HOST:PORT" to listen on (e.g. "{DEFAULT_LOCAL_API}"; port 0: any free port), or "" '
        "for no local API",
        lambda x: _address(x, lowest_port=0),
    ),
    "certificate": _Rule(str, 'the server certificate\'s PEM file, or ""', _file_name),
    "key": _Rule(str, 'the server key\'s PEM file, or ""', _file_name),
    "client_ca": _Rule(
        str, 'the PEM file of the CA that signs client certificates, or ""', _file_name
    ),
}


@dataclass(frozen=True)
class LocalApiSettings:
    """The store's local gRPC API (the ``[local_api]`` table; ``store_node.local_api``).

    Attributes:
        address: where ``loyalnet store serve`` listens; "" for no local API.
        certificate, key, client_ca: PEM files (relative to the store folder, or absolute)
            for mutual TLS; all three or none. Without them the address must be loopback.
    """

    address: str = DEFAULT_LOCAL_API
    certificate: str = ""
    key: str = ""
    client_ca: str = ""

    def __post_init__(self) -> None:
        _check_fields(self, _LOCAL_API_RULES)


@dataclass(frozen=True)
class CameraSettings:
    """One camera of the store (a ``[[cameras]]`` table of ``store.toml``).

    Attributes:
        name: how events, footfall counts and health name the camera, e.g. "entrance".
        source: where frames come from: a camera index ("0"), an RTSP or HTTP stream URL, a
            video file, or a folder of images (read in name order).
        fps: frames looked at per second; a faster source is sampled down to it.
        smallest_face: faces whose box is narrower than this many pixels (in the camera's
            frame) are tracked but never used to recognise: too few pixels to tell members
            apart reliably.
    """

    name: str
    source: str
    fps: float = 10.0
    smallest_face: int = 40

    def __post_init__(self) -> None:
        _check_fields(self, _CAMERA_RULES)


@dataclass(frozen=True)
class TrainingLimits:
    """The store's privacy floor: the most a federated training round may ask of it.

    The coordinator chooses each round's settings; these are the store's own bounds on them,
    set by whoever runs the store, in ``store.toml``'s ``[training]`` table. A round asking
    for anything outside them is declined before any training and the store sends no count at
    all (``store_node.client_app``). They bound how much one member's face can shape, and so
    be inferred from, the update the store sends.

    Attributes:
        min_members: the fewest consenting members (with crops) the store trains on; a round
            whose ``min-members`` is lower is declined, and the store never trains with fewer,
            whatever a round asks. With few members each one weighs more in the update.
        max_local_epochs: the most passes over the crops a round may ask: more epochs fit the
            update to (memorise) the store's members.
        min_learning_rate: the lowest learning rate a round may ask. With a tiny step the
            update of several SGD steps is close to a scaled sum of gradients at one point,
            which gradient-inversion attacks reconstruct training images from.
        max_learning_rate: the highest: large steps over few members pull the model onto them
            (0.01 already degraded the model on a small store; see ``TrainingConfig``).
        require_frozen_batchnorm: decline a round with ``freeze-batchnorm`` false: live
            BatchNorm statistics are means and variances of the members' face features, and
            they are sent unclipped and unnoised.
        require_clipping: decline a round without differential-privacy clipping (no
            ``clipping_norm`` in its config, see ``coordinator.store_privacy``).
        max_clipping_norm: None (no line in the file) for no maximum; else decline a round
            whose ``clipping_norm`` is larger: the bound on how far this store's update may
            move the model. The store cannot see the coordinator's noise, only this bound.
            Needs ``require_clipping`` (a round without clipping would bound nothing).
    """

    min_members: int = 5
    max_local_epochs: int = 5
    min_learning_rate: float = 1e-5
    max_learning_rate: float = 0.01
    require_frozen_batchnorm: bool = True
    require_clipping: bool = False
    max_clipping_norm: float | None = None

    @classmethod
    def admitting(
        cls, *, local_epochs: int, learning_rate: float, min_members: int
    ) -> TrainingLimits:
        """The default floor, widened just enough to admit these round settings.

        For stores whose operator also chooses the rounds (a research simulation, the demo):
        their experiments may ask for more epochs or fewer members than a real store allows.
        """
        default = cls()
        return cls(
            min_members=min(default.min_members, min_members),
            max_local_epochs=max(default.max_local_epochs, local_epochs),
            min_learning_rate=min(default.min_learning_rate, learning_rate),
            max_learning_rate=max(default.max_learning_rate, learning_rate),
        )

    def __post_init__(self) -> None:
        _check_fields(self, _TRAINING_RULES)
        if self.min_learning_rate > self.max_learning_rate:
            raise LoyalnetError(
                f"[{TRAINING_TABLE}] min_learning_rate = {self.min_learning_rate} is above "
                f"max_learning_rate = {self.max_learning_rate}; set min_learning_rate <= "
                "max_learning_rate."
            )
        if self.max_clipping_norm is not None and not self.require_clipping:
            raise LoyalnetError(
                f"[{TRAINING_TABLE}] max_clipping_norm = {self.max_clipping_norm} needs "
                "require_clipping = true (a round without clipping would not be bounded); "
                "set require_clipping = true or remove max_clipping_norm."
            )


@dataclass(frozen=True)
class StoreConfig:
    """Settings of one store.

    Attributes:
        store_id: the chain's name for this store; never a member's data. Letters, digits,
            ``-`` and ``_``, as the coordinator registers stores by it.
        target_fpir: false-positive identification rate the decision threshold is set for:
            the share of searches by people who are not members that would wrongly return a
            member, in [1e-6, 0.5]. 0.001 means one stranger in a thousand.
        policy_version: the consent policy text members agree to at enrolment.
        retention_days: how long a consent (and so the member's templates) stays valid, 1 to
            the gallery's ``MAX_RETENTION_DAYS`` (the gallery refuses a longer consent).
        flip: average each face's embedding with its mirror image's; off by default, as on
            LFW it changed accuracy by 0.02 points at twice the embedding cost.
        superlink: the chain's SuperLink as ``host:port``, set by ``loyalnet store join``;
            empty while the store has not joined.
        control_plane: the chain's control plane (the coordinator's gRPC port for
            ``loyalnet store serve``) as ``host:port``, set by ``loyalnet store join
            --control-plane``; empty while the store has none. Its line is left out of
            ``store.toml`` while empty.
        training: the store's privacy floor for federated training (``[training]``).
        cameras: the cameras ``loyalnet store serve`` reads (``[[cameras]]``).
        local_api: the store's local gRPC API (``[local_api]``).

    Raises:
        LoyalnetError: a value of the wrong type or out of range.
    """

    store_id: str
    target_fpir: float = 0.001
    policy_version: str = "2026-11"
    retention_days: int = 365
    flip: bool = False
    superlink: str = ""
    control_plane: str = ""
    training: TrainingLimits = field(default_factory=TrainingLimits)
    cameras: tuple[CameraSettings, ...] = ()
    local_api: LocalApiSettings = field(default_factory=LocalApiSettings)

    def __post_init__(self) -> None:
        _check_fields(self, _STORE_RULES)
        if not isinstance(self.training, TrainingLimits):
            raise LoyalnetError(
                f"StoreConfig training = {self.training!r} is not valid: it must be a "
                "TrainingLimits."
            )
        if not isinstance(self.local_api, LocalApiSettings):
            raise LoyalnetError(
                f"StoreConfig local_api = {self.local_api!r} is not valid: it must be a "
                "LocalApiSettings."
            )
        object.__setattr__(self, "cameras", tuple(self.cameras))
        check_cameras(self.cameras)


def check_cameras(cameras: tuple[CameraSettings, ...]) -> None:
    """Refuse more than ``MAX_CAMERAS`` cameras or two of one name (events would mix)."""
    if len(cameras) > MAX_CAMERAS:
        raise LoyalnetError(
            f"{len(cameras)} cameras are configured; a store runs at most {MAX_CAMERAS}."
        )
    names = [camera.name for camera in cameras]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise LoyalnetError(
            f"camera name(s) {', '.join(twice)} are used twice; give each camera its own name."
        )


@dataclass(frozen=True)
class StorePaths:
    """The files of one store folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def database(self) -> Path:
        return self.root / DATABASE_NAME

    @property
    def key(self) -> Path:
        return self.root / KEY_NAME

    @property
    def ca_certificate(self) -> Path:
        """The chain's CA certificate, copied in by ``loyalnet store join``."""
        return self.root / CA_CERTIFICATE_NAME

    @property
    def control_plane_certificate(self) -> Path:
        """The store's control-plane client certificate (public), kept by ``loyalnet store join
        --certificate``: CN the store's id, OU ``store``, for the store's own ``node_key``."""
        return self.root / CONTROL_PLANE_CERTIFICATE_NAME

    @property
    def trainer_socket(self) -> Path:
        """The Unix socket of the store's trainer while ``loyalnet store serve`` runs
        (``store_node.trainer``)."""
        return self.root / TRAINER_SOCKET_NAME


def new_store_id() -> str:
    """A short random store id, used when the chain has not named the store."""
    return f"store-{uuid.uuid4().hex[:8]}"


def write_config(paths: StorePaths, config: StoreConfig) -> None:
    """Write ``store.toml``, the ``[training]`` table in full so the store's limits show.

    An unset ``max_clipping_norm`` is written as a comment: TOML has no null, and a file
    without the key means no maximum.
    """
    lines = ["# loyalnet store settings; see `loyalnet store init --help` and the README."]
    for name in _STORE_RULES:
        value = getattr(config, name)
        if name in _WRITTEN_WHEN_SET and value == "":
            continue
        lines.append(f"{name} = {_toml_value(value)}")
    lines += [
        "",
        "# The most a federated training round may ask of this store; a round asking for more",
        "# is declined before any training. Delete a line for its default.",
        f"[{TRAINING_TABLE}]",
    ]
    limits = config.training
    for name, rule in _TRAINING_RULES.items():
        value = getattr(limits, name)
        line = f"{name} = {_toml_value(value)}" if value is not None else f"# {name} = 0.1"
        lines.append(f"{line:<31} # {rule.note}")
    if config.local_api != LocalApiSettings():
        lines += ["", f"[{LOCAL_API_TABLE}]"]
        lines += [
            f"{name} = {_toml_value(getattr(config.local_api, name))}" for name in _LOCAL_API_RULES
        ]
    for camera in config.cameras:
        lines += ["", f"[[{CAMERAS_TABLE}]]"]
        lines += [f"{name} = {_toml_value(getattr(camera, name))}" for name in _CAMERA_RULES]
    paths.config.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_config(paths: StorePaths) -> StoreConfig:
    """Read and check ``store.toml`` of an initialised store.

    Raises:
        LoyalnetError: when the folder is not a store, or the file is not valid TOML, has an
            unknown key or section, lacks ``store_id``, or has a value of the wrong type or
            out of range; the message names the file, the key, the value and what is valid.
    """
    if not paths.config.is_file():
        raise LoyalnetError(
            f"{paths.root} is not a store folder (no {CONFIG_NAME}); "
            f"create one with `loyalnet store init --store {paths.root}`."
        )
    try:
        values = tomllib.loads(paths.config.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise LoyalnetError(f"{paths.config} is not valid TOML ({err}); fix the file.") from err
    except OSError as err:
        raise LoyalnetError(f"cannot read {paths.config} ({err}); check the file.") from err
    where = str(paths.config)
    table = values.pop(TRAINING_TABLE, {})
    cameras = _cameras(where, values.pop(CAMERAS_TABLE, []))
    api_table = values.pop(LOCAL_API_TABLE, {})
    if not isinstance(api_table, dict):
        raise LoyalnetError(
            f"{where}: {LOCAL_API_TABLE} = {_shown(api_table)} is not valid: it must be the "
            f"[{LOCAL_API_TABLE}] table; see the README."
        )
    _refuse_unknown(where, api_table, _LOCAL_API_RULES, f"[{LOCAL_API_TABLE}] ")
    local_api = LocalApiSettings(
        **_checked(where, api_table, _LOCAL_API_RULES, LocalApiSettings, f"[{LOCAL_API_TABLE}] ")
    )
    _refuse_unknown(where, values, _STORE_RULES, "")
    if not isinstance(table, dict):
        raise LoyalnetError(
            f"{where}: {TRAINING_TABLE} = {_shown(table)} is not valid: it must be the "
            f"[{TRAINING_TABLE}] table of the store's training limits; see the README."
        )
    _refuse_unknown(where, table, _TRAINING_RULES, f"[{TRAINING_TABLE}] ")
    if "store_id" not in values:
        raise LoyalnetError(
            f'{where} has no store_id; add a line like store_id = "store-042" (the chain\'s '
            "name for this store)."
        )
    store = _checked(where, values, _STORE_RULES, StoreConfig, "")
    limits = _checked(where, table, _TRAINING_RULES, TrainingLimits, f"[{TRAINING_TABLE}] ")
    try:
        return StoreConfig(
            **store, training=TrainingLimits(**limits), cameras=cameras, local_api=local_api
        )
    except LoyalnetError as err:  # the checks across keys, e.g. the learning-rate range
        raise LoyalnetError(f"{where}: {err}") from err


def _cameras(where: str, tables: object) -> tuple[CameraSettings, ...]:
    """The ``[[cameras]]`` tables, each checked like the rest of the file."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise LoyalnetError(
            f"{where}: {CAMERAS_TABLE} = {_shown(tables)} is not valid: write one "
            f'[[{CAMERAS_TABLE}]] table per camera, with name = "..." and source = "...".'
        )
    cameras = []
    for number, table in enumerate(tables, start=1):
        prefix = f"[[{CAMERAS_TABLE}]] #{number} "
        _refuse_unknown(where, table, _CAMERA_RULES, prefix)
        for needed in ("name", "source"):
            if needed not in table:
                raise LoyalnetError(
                    f'{where}: {prefix}has no {needed}; add a line like {needed} = "...".'
                )
        cameras.append(
            CameraSettings(**_checked(where, table, _CAMERA_RULES, CameraSettings, prefix))
        )
    return tuple(cameras)


def _refuse_unknown(
    where: str, values: Mapping[str, object], rules: Mapping[str, _Rule], prefix: str
) -> None:
    """Refuse keys and tables not in ``rules``: a misspelt limit must not silently vanish."""
    for key, value in values.items():
        if key in rules:
            continue
        if isinstance(value, dict):
            name = f"[{TRAINING_TABLE}.{_key(key)}]" if prefix else f"[{_key(key)}]"
            raise LoyalnetError(
                f"{where}: unknown section {name}; the sections are [{TRAINING_TABLE}], "
                f"[{LOCAL_API_TABLE}] and [[{CAMERAS_TABLE}]]. "
                "Remove it or fix its spelling."
            )
        raise LoyalnetError(
            f"{where}: {prefix}{_key(key)} = {_shown(value)} is an unknown setting; valid "
            f"{prefix or 'top-level '}settings are {', '.join(rules)}. Remove it or fix its "
            "spelling."
        )


def _checked(
    where: str,
    values: Mapping[str, object],
    rules: Mapping[str, _Rule],
    record: type,
    prefix: str,
) -> dict[str, Any]:
    """``values`` checked against ``rules`` (floats for real-valued settings)."""
    defaults = {f.name: f.default for f in fields(record)}
    chosen: dict[str, Any] = {}
    for key, value in values.items():
        default = defaults[key]
        if default is MISSING:
            fix = "fix the line"
        elif default is None:
            fix = "fix the line, or delete it for no maximum"
        else:
            fix = f"fix the line, or delete it for the default {_toml_value(default)}"
        chosen[key] = _checked_value(f"{where}: {prefix}", key, value, rules[key], fix)
    return chosen


def _check_fields(record: object, rules: Mapping[str, _Rule]) -> None:
    """The checks of ``rules`` on a record built in code; real numbers become floats."""
    name = type(record).__name__
    for key, rule in rules.items():
        value = getattr(record, key)
        if value is None and rule.optional:
            continue
        checked = _checked_value(f"{name} ", key, value, rule, "")
        object.__setattr__(record, key, checked)


def _checked_value(where: str, key: str, value: object, rule: _Rule, fix: str) -> object:
    """``value`` if it is of ``rule``'s kind and passes its test (a float if real-valued)."""
    right_kind = _of_kind(value, rule.kind)
    if right_kind and rule.test(value):
        if rule.kind is not float:
            return value
        try:
            return float(value)  # type: ignore[arg-type]
        except OverflowError:  # a whole number beyond any float (TOML ints are unbounded)
            pass
    problem = "out of range" if right_kind else "of the wrong type"
    then = f"; {fix}" if fix else ""
    raise LoyalnetError(
        f"{where}{key} = {_shown(value)} is {problem}: {key} must be {rule.valid}{then}."
    )


def _of_kind(value: object, kind: type) -> bool:
    """Whether ``value`` is a ``kind``: bool is no number; an int is a real number too."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _shown(value: object) -> str:
    """``value`` as in the file (TOML spelling), on one line and cut short."""
    if isinstance(value, str):
        text = f'"{_printable(value)}"'
    elif isinstance(value, bool | int | float):
        text = _toml_value(value)
    else:
        text = _printable(repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _key(key: str) -> str:
    """A key as the message shows it: printable, cut short."""
    text = _printable(key)
    return text if len(text) <= 60 else text[:57] + "..."


def _printable(text: str) -> str:
    """``text`` with characters that would break a one-line message escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
