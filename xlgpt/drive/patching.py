"""xlgpt patch: activation patching through a loaded patching book (built with --corrupted), one patch at a
time, as TransformerLens' patching functions sweep it: the residual stream entering each block, each attention
output and each MLP output at every (layer, position), and each head's output at every position, per (layer,
head). Each patch sets the Patch cells, recalculates and reads PatchedMetric, checked against the reference's
own patching; the heatmaps then go into a copy of the book, where eval checks them again."""

import numpy as np

from xlgpt.check.verify import heatmaps_expected, loaded, reference_edits, tolerance
from xlgpt.compile.ops.patching import STATUS_DONE
from xlgpt.drive.train import Diverged
from xlgpt.model.checkpoint import as_written
from xlgpt.sheet import contract as C
from xlgpt.sheet.styles import PERCENT
from xlgpt.sheet.writer import copy_with_cells


def sweep(book, ckpt, engine, timeout=3600, on_stage=lambda msg: None, on_patch=lambda *patch: None):
    """Every patch of a patching `book` in `engine`: {component: [layer, position or head] PatchedMetric}, each
    value within eval's tolerance of the reference's (else Diverged). on_patch(component, layer, position or head,
    value)."""
    cfg = ckpt.config
    expected = heatmaps_expected(as_written(ckpt), book, book.used, reference_edits(book, cfg))
    maps = {}
    with loaded(book, engine, timeout, on_stage) as (sheet, _):
        for code, (component, name) in enumerate(C.PATCHING_HEATMAPS.items(), 1):
            along = C.PATCH_HEAD if component == "head" else C.PATCH_POSITION
            want = expected[name]
            got, limit = np.zeros_like(want), tolerance(want)
            maps[component] = got
            sheet.set(C.PATCH_COMPONENT, code)
            for layer in range(cfg.n_layer):
                sheet.set(C.PATCH_LAYER, layer)
                for k in range(want.shape[1]):
                    sheet.set(along, k)
                    sheet.calculate()
                    got[layer, k] = float(sheet.read([C.PATCHED_METRIC])[C.PATCHED_METRIC][0, 0])
                    on_patch(component, layer, k, got[layer, k])
                    if not abs(got[layer, k] - want[layer, k]) <= limit:
                        raise Diverged(
                            f"{component}, layer {layer}, {along} {k}: the book's PatchedMetric {got[layer, k]!r} "
                            f"is not the reference's {want[layer, k]!r}"
                        )
    return maps


def write_heatmaps(book, maps, out):
    """A copy of `book` at `out` with the heatmaps in its Patching tab, and its PatchingStatus saying so."""
    cells = {}
    for component, name in C.PATCHING_HEATMAPS.items():
        rect = book.names[name]
        for i, row in enumerate(maps[component]):
            for j, value in enumerate(row):
                cells[book.address(rect.cell(i, j))] = (float(value), PERCENT)
    cells[book.address(book.names[C.PATCHING_STATUS])] = (STATUS_DONE, 0)
    copy_with_cells(book.path, out, cells)
