"""The registry of backbone architectures: name → class (filled by :func:`hinge_sc.nn.register_backbone`).

A saved backbone names its architecture; :meth:`hinge_sc.Backbone.load` looks the class up here. The module imports
nothing of the package, so the base class, the readers and the file format can all use it without import cycles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._backbone import Backbone

#: Architecture name → backbone class, in the order they were registered (``"cellfm"``, ``"scgpt"``, then yours).
BACKBONES: dict[str, type[Backbone]] = {}
#: Architecture of ``Backbone(genes)`` and :meth:`hinge_sc.Backbone.random` called on the base class.
DEFAULT_ARCHITECTURE = "cellfm"


def backbone_class(architecture: str) -> type[Backbone]:
    """The class registered as ``architecture``.

    Raises
    ------
    ValueError
        No class is registered under that name (the message names the registered ones).
    """
    cls = BACKBONES.get(architecture) if isinstance(architecture, str) else None
    if cls is None:
        raise ValueError(unknown_architecture(architecture))
    return cls


def unknown_architecture(architecture: object) -> str:
    """The message for an architecture name that is not registered: the name, the known ones and the remedy."""
    return (
        f"unknown backbone architecture {architecture!r} (known: {', '.join(map(repr, BACKBONES)) or 'none'}); "
        "an architecture of your own must be registered with `hinge_sc.nn.register_backbone` (import the module "
        "that registers it) before its backbones are built or loaded"
    )


def class_for_config(config: object) -> type[Backbone]:
    """The architecture a config builds: the first registered class whose ``config_class`` is ``type(config)``.

    ``None`` gives the default architecture (:data:`DEFAULT_ARCHITECTURE`).

    Raises
    ------
    TypeError
        No registered architecture takes a config of that type.
    """
    if config is None:
        return backbone_class(DEFAULT_ARCHITECTURE)
    for cls in BACKBONES.values():
        if type(config) is cls.config_class:
            return cls
    takes = ", ".join(f"{c.config_class.__name__} ({name})" for name, c in BACKBONES.items())
    raise TypeError(f"`config` must be the config of a registered backbone architecture ({takes}), found "
                    f"{type(config).__name__}.")  # fmt: skip
