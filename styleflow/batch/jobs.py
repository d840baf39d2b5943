"""The pairs of a batch: from a manifest CSV or from every combination of contents and styles.

A pair's options are the method's command-line options (validated by that command's own
parser), with a manifest row's extra columns overriding them.
"""

from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import StyleflowError, os_error
from ..io.files import regular_file, resolved

REQUIRED_COLUMNS = ("content", "style", "output")
# Extensions read as images when a folder or glob is given.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


@dataclass
class Pair:
    """One content/style pair: where its picture goes and the API options it runs with.

    `error` is set when the pair cannot run (e.g. a bad value in its manifest row); it is
    then recorded as failed with that message, and the batch goes on.
    """

    content: str
    style: str
    output: str
    options: dict = field(default_factory=dict)
    error: str | None = None
    label: str = ""

    def describe(self) -> dict:
        return {"content": self.content, "style": self.style, "output": self.output}


def expand_images(specs: Sequence[str], option: str) -> list[Path]:
    """Image files named by `specs`: files, folders (their images, sorted) or glob patterns."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        try:
            os.stat(path)
        except FileNotFoundError:
            pass  # perhaps a glob pattern
        except OSError as exc:  # a symlink loop, a name too long, no permission...
            raise os_error(option, spec, exc, "read") from None
        if path.is_dir():
            found += sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif glob.has_magic(spec):
            found += sorted(Path(p) for p in glob.glob(spec)
                            if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            found.append(path)  # a file that is not an image fails its pairs, with the reason
        else:  # a misspelled folder or file: refused before any pair runs
            raise StyleflowError(f"{option}: '{spec}' does not exist")
    if not found:
        raise StyleflowError(f"{option}: no image files in {' '.join(specs)}")
    return list(dict.fromkeys(found))


def grid_pairs(contents: Sequence[str], styles: Sequence[str], out: str,
               options: dict) -> list[Pair]:
    """Every combination, written to OUT/{content}_{style}.png."""
    pairs = []
    for content in expand_images(contents, "--contents"):
        for style in expand_images(styles, "--styles"):
            output = Path(out) / f"{content.stem}_{style.stem}.png"
            pairs.append(Pair(str(content), str(style), str(output), dict(options),
                              label=output.name))
    # With OUT among the contents' or styles' folders, a rerun would find the outputs there:
    # they are no inputs (the batch stays resumable).
    outputs = {resolved(pair.output) for pair in pairs}
    return [pair for pair in pairs
            if resolved(pair.content) not in outputs and resolved(pair.style) not in outputs]


def manifest_pairs(path: str, options: dict, row_options: Callable[[dict, Path], dict],
                   columns_known: Callable[[Sequence[str]], None]) -> list[Pair]:
    """The rows of a manifest CSV (header content,style,output[,option columns...]); paths
    are relative to the manifest's folder. `columns_known(names)` raises for an option column
    the method does not have (a typo would otherwise fail every row); `row_options(cells,
    folder)` turns a row's extra cells into API options, raising StyleflowError for a bad
    value, which fails that row only."""
    manifest = Path(path)
    try:
        if regular_file(manifest, "--manifest") is None:  # read whole: no device or pipe
            raise FileNotFoundError
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames:  # "content, style, output" names the columns too
                reader.fieldnames = [name.strip() for name in reader.fieldnames]
            rows, ended = [], reader.line_num  # the header's last line
            for row in reader:  # numbered by the line it ends on: blank lines are skipped
                rows.append((reader.line_num, row, ended + 1))  # and the first it may start on
                ended = reader.line_num
            header = reader.fieldnames or []
    except FileNotFoundError:
        raise StyleflowError(f"--manifest '{path}': file not found") from None
    except OSError as exc:
        raise os_error("--manifest", path, exc, "read") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StyleflowError(f"--manifest '{path}': cannot read it ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise StyleflowError(f"--manifest '{path}': needs a header with the columns "
                             f"content,style,output and at least one row "
                             f"(missing: {', '.join(missing)})")
    if not rows:
        raise StyleflowError(f"--manifest '{path}': has a header but no rows")
    columns_known([c for c in header if c not in REQUIRED_COLUMNS and c is not None])
    folder = manifest.parent
    pairs = []
    for number, row, first in rows:
        if None in row:
            extra = row.pop(None)
            error = (f"row {number}: {len(extra)} more cell{'s' if len(extra) > 1 else ''} "
                     "than the header has columns")
        else:
            error = None
        cells = {k: (v or "").strip() for k, v in row.items()}
        for column, value in cells.items():
            if error is None and ("\x00" in value or "\n" in value or "\r" in value):
                error = (f"row {number}: the '{column}' cell holds a line break or a NUL "
                         "character, which no file name here may hold")
                if "\n" in value and number > first and number == rows[-1][0]:
                    # The csv module reads an unclosed quote to the end of the file.
                    error += (f"; a quote left open after line {first - 1} takes in every "
                              f"line to the file's end, line {number}")
        paths = {c: cells[c] for c in REQUIRED_COLUMNS}
        for column, value in paths.items():
            if not value and error is None:
                error = f"row {number}: the '{column}' cell is empty"
        resolved = {c: str(folder / v) if v and not os.path.isabs(v) else v
                    for c, v in paths.items()}
        overrides = {k: v for k, v in cells.items() if k not in REQUIRED_COLUMNS and v}
        pair_options = dict(options)
        if error is None and overrides:
            try:
                pair_options = row_options(overrides, folder)
            except StyleflowError as exc:
                error = f"row {number}: {exc}"
        pairs.append(Pair(resolved["content"], resolved["style"], resolved["output"],
                          pair_options, error, label=f"row {number}"))
    return pairs


def iteration_name(output: str | os.PathLike, index: int) -> Path:
    """Where --iteration-images puts iteration `index` (0-based) of `output`."""
    output = Path(output)
    return output.with_name(f"{output.stem}_at_iteration_{index:02d}{output.suffix}")


def written(pair: Pair, iteration_images: bool = False) -> list[Path]:
    """The files `pair` writes: its output, and with `iteration_images` each iteration's."""
    count = pair.options.get("iterations") if iteration_images else 0
    count = count if isinstance(count, int) and not isinstance(count, bool) else 0
    return [Path(pair.output), *(iteration_name(pair.output, i) for i in range(count))]


def pair_inputs(pair: Pair) -> list[str]:
    """The files `pair` reads: content, style, and the options' images (init, masks)."""
    extra = [pair.options.get(k) for k in ("init", "initial", "content_mask", "style_mask")]
    return [str(p) for p in (pair.content, pair.style, *extra) if isinstance(p, (str, Path))]


def check_distinct_outputs(pairs: Sequence[Pair], iteration_images: bool = False) -> None:
    """Two pairs writing one file would overwrite each other's work: refuse up front (their
    iteration images too, with `iteration_images`). Pairs that cannot run are left out: each
    fails on its own."""
    seen: dict[Path, Pair] = {}
    for pair in pairs:
        if pair.error:
            continue
        for path in written(pair, iteration_images):
            key = resolved(path)
            if key in seen and seen[key] is not pair:
                other = seen[key]
                raise StyleflowError(f"two pairs write '{path}' ({other.content} + "
                                     f"{other.style} and {pair.content} + {pair.style}); "
                                     "give them distinct outputs")
            seen[key] = pair
