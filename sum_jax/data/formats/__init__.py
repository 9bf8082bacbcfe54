"""Source formats that datasets are prepared from.

Each format module has `DEFAULTS` (its options), `list_items(root, split_tag, opts, log)` (cheap:
finds files, parses annotation indexes, reports files that cannot be paired) and
`load_item(item, opts, log, require_masks) -> Example | None` (reads and validates one image
and its masks; `None` when skipped).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from sum_jax.data.formats import coco, folder, label_map, sa1b

FORMATS: dict[str, ModuleType] = {
    "folder": folder,
    "coco": coco,
    "label_map": label_map,
    "sa1b": sa1b,
}


def get_format(name: str) -> ModuleType:
    if name not in FORMATS:
        raise ValueError(f"unknown dataset format {name!r}; known: {sorted(FORMATS)}")
    return FORMATS[name]


def merge_options(fmt: str, *layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The format's defaults overridden by each layer in turn.

    `None` values are ignored (a config lists every format's options, unset ones as None); a
    comma-separated string given for a list option is split, so list options can be set from
    the command line (`--config.options.mask_globs="{stem}_gt.png,{stem}/*.png"`). Keys the
    format does not know are an error.
    """
    opts = dict(get_format(fmt).DEFAULTS)
    list_keys = {k for k, v in opts.items() if isinstance(v, list)} | {"category_ids"}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if key not in opts:
                raise ValueError(
                    f"unknown option {key!r} for format {fmt!r}; known: {sorted(opts)}"
                )
            if key in list_keys and isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            opts[key] = list(value) if isinstance(value, (tuple, list)) else value
    return opts


def all_option_names() -> set[str]:
    """Every option of every format (what a prepare config may set)."""
    return {k for module in FORMATS.values() for k in module.DEFAULTS}
