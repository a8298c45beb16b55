"""`mtl adapt`, `mtl predict`, `mtl bundle verify|inspect`: the device side (numpy + onnxruntime + Pillow).

Nothing here needs torch; `device_runtime` is imported inside the commands, so `mtl --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtl.cli.errors import handle_errors, one_line

if TYPE_CHECKING:
    from mtl.device_runtime.bundle import Bundle

console = Console()


def say(line: str) -> None:
    """One line of plain output: never wrapped at the terminal's width (one line per image stays one line
    for a script to read), never parsed as rich markup (a class folder may be named "[draft]"), and control
    characters in names written as escapes."""
    console.print(one_line(line), highlight=False, soft_wrap=True, markup=False)


bundle_app = typer.Typer(no_args_is_help=True, help="Check or describe a deploy bundle (directory or .mtlb).")

BundleArg = Annotated[Path, typer.Argument(help="A bundle directory or .mtlb file.")]
KeyOpt = Annotated[Path | None, typer.Option("--key", help="Ed25519 public key (PEM): require a valid signature "
                                            "(needs the 'sign' extra).")]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="onnxruntime intra-op threads.")]


@handle_errors
def adapt(
    bundle: Annotated[Path, typer.Argument(help="A bundle (directory or .mtlb), or an adapted state directory to "
                                               "change with --add / --remove.")],
    support: Annotated[Path | None, typer.Argument(help="One sub-folder of labelled images per new class (with a "
                                                        "bundle).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Adapted state directory to write, replaced atomically "
                                             "(default with an adapted state: that state).")] = None,
    add: Annotated[Path | None, typer.Option("--add", help="An adapted state: add the classes of this folder (one "
                                             "sub-folder per class), or more examples of classes it has.")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="An adapted state: retire this class "
                                                     "(repeatable).")] = None,
    steps: Annotated[int | None, typer.Option(min=0, help="Update steps (default: the bundle's; with an adapted "
                                              "state, the steps it was adapted with).")] = None,
    lr: Annotated[float | None, typer.Option(help="Step size, or the factor on meta-learned step sizes "
                                             "(default: the bundle's, or the adapted state's).")] = None,
    context_steps: Annotated[int | None, typer.Option(
        min=0, max=1000, help="A bundle that adapts a context vector (CAML): its steps, before the head's "
                              "(default: the bundle's).")] = None,
    context_lr: Annotated[float | None, typer.Option(help="The context's step size (default: the bundle's).")] = None,
    augment: Annotated[int, typer.Option(min=0, max=64, help="Each support image also contributes this many seeded "
                                         "affine variants (±10°, 1 ± 0.1 scale, ±10 % shifts).")] = 0,
    threads: ThreadsOpt = 1,
    key: KeyOpt = None,
) -> None:
    """Learn new classes from a few labelled images per class, on this machine, without torch; or add and retire
    classes of an adapted state in place."""
    from mtl.device_runtime import Adapter, Bundle
    from mtl.device_runtime.adapted_state import ADAPTED_JSON
    from mtl.device_runtime.atomic import check_output
    from mtl.device_runtime.errors import ConfigError
    from mtl.device_runtime.preprocess import image_folders

    in_place = (bundle / ADAPTED_JSON).is_file()
    if in_place:
        if support is not None:
            raise ConfigError(f"{bundle} is an adapted state: give new classes with --add DIR, not as SUPPORT")
        if add is None and not remove:
            raise ConfigError(f"{bundle} is an adapted state: say what to change with --add DIR and/or --remove CLASS")
        out = bundle if out is None else out
    else:
        if add is not None or remove:
            raise ConfigError(f"--add and --remove change an adapted state (mtl adapt --out); {bundle} is not one")
        if support is None or out is None:
            raise ConfigError("mtl adapt BUNDLE needs SUPPORT (one sub-folder of images per class) and --out")
    check_output(out, "--out", directory=True, marker=ADAPTED_JSON)  # before the work, not after it
    if in_place:
        adapter = Adapter.load(bundle, intra_op_num_threads=threads)
        if key is not None:  # the state's own bundle copy, checked like any bundle
            Bundle.from_bytes(adapter.bundle.to_zip_bytes(), name=str(bundle), key=key)
        before = adapter.result  # adapt again as it was adapted, unless told otherwise
        steps = before.steps if steps is None else steps
        if lr is None and adapter.bundle.manifest.rule == "sgd":
            lr = before.lr
        if context_steps is None and adapter.bundle.context is not None:
            context_steps = before.context_steps
        for name in remove or []:
            adapter.remove_class(name)
        new = image_folders(add) if add is not None else {}
        for name, images in new.items():
            adapter.add_examples(name, images, extend=True, augment=augment)
        if adapter.bundle.keeps_images and new:
            say(f"note: {adapter.bundle.label} embeds its support set as a whole (batch statistics or a context): "
                "every support image is embedded again")
    else:
        adapter = Adapter(Bundle.load(bundle, intra_op_num_threads=threads, key=key))
        for name, images in image_folders(support).items():
            adapter.add_examples(name, images, augment=augment)
    result = adapter.adapt(steps, lr, context_steps=context_steps, context_lr=context_lr)
    adapter.save(out)
    say(f"classes ({len(result.classes)}): {', '.join(result.classes)}")
    say(f"support: {result.support} images")
    if result.context_losses:
        say(f"context: loss {result.context_losses[0]:.4g} before {result.context_steps} step(s)")
    say(f"loss: {result.loss_before:.4g} → {result.final_loss:.4g} ({result.steps} steps, lr {result.lr:g})")
    say(f"saved: {out}")


@handle_errors
def classes(
    adapted: Annotated[Path, typer.Argument(help="An adapted state directory (mtl adapt --out).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list on stdout.")] = False,
) -> None:
    """List an adapted state's classes: label, examples, when each was added."""
    from mtl.device_runtime import Adapter, jsonio

    adapter = Adapter.load(adapted)
    records = [{"label": i, "class": name, "examples": count, "added": adapter.added.get(name, "")}
               for i, (name, count) in enumerate(adapter.examples.items())]
    if as_json:
        typer.echo(jsonio.dumps(records))
        return
    for r in records:
        say(f"{r['label']}  {r['class']}  {r['examples']} example(s)  added {r['added'] or 'unknown'}")


@handle_errors
def predict(
    adapted: Annotated[Path, typer.Argument(help="An adapted state directory (mtl adapt --out).")],
    images: Annotated[list[Path], typer.Argument(help="Images to classify.")],
    reject: Annotated[str, typer.Option(
        "--reject", help="Label an image 'unknown' when it is none of the classes: off, auto (the bundle's calibrated "
                         "threshold, else one from the support set alone) or a score threshold P in [-2, 2]. "
                         "Default: auto for a bundle calibrated with an open-set background, else off.",
        show_default=False)] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list on stdout.")] = False,
    show: Annotated[Path | None, typer.Option("--show", help="Also draw a contact sheet (PNG) of the images with "
                                              "their predicted label and confidence (Pillow only).")] = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Classify images with an adapted state: the label and its probability per image."""
    from mtl.device_runtime import Adapter, jsonio
    from mtl.device_runtime.atomic import check_png_target
    from mtl.device_runtime.contact_sheet import save_contact_sheet
    from mtl.device_runtime.open_set import UNKNOWN, default_reject, parse_reject

    if show is not None:
        check_png_target(show, "--show")
    rule = parse_reject(reject) if reject else None
    adapter = Adapter.load(adapted, intra_op_num_threads=threads)
    if rule is None:
        rule = default_reject(adapter.bundle.manifest.open_set)
        if rule == "auto" and UNKNOWN in adapter.result.classes:  # its label would be ambiguous: not by default
            rule = "off"
            typer.echo(f"note: a class is named {UNKNOWN!r}, so --reject is off (rename it to predict with "
                       "reject)", err=True)
    labels, probs, scores, limit = adapter.predict_scored(images, rule)
    classes = adapter.result.classes
    records = [{"image": str(path), "label": label, "probability": float(row.max()),
                "probabilities": {name: float(p) for name, p in zip(classes, row, strict=True)},
                "score": float(score), **({} if limit is None else {"threshold": limit})}
               for path, label, row, score in zip(images, labels, probs, scores, strict=True)]
    if show is not None:
        save_contact_sheet(show, images, labels, [r["probability"] for r in records])
    if as_json:
        typer.echo(jsonio.dumps(records))
        return
    for record in records:
        say(f"{record['image']}: {record['label']} ({100 * record['probability']:.1f}%)")
    if show is not None:
        say(f"contact sheet: {show}")


@handle_errors
def verify(bundle: BundleArg, key: KeyOpt = None) -> None:
    """Check a bundle completely (schema, sha256 of every file, graph interfaces, onnxruntime load)."""
    from mtl.device_runtime import Bundle

    loaded = Bundle.load(bundle, key=key)
    if key is not None:
        signature = f"signature verified with {key}"
    elif loaded.signature is not None:
        signature = "signature NOT checked (it carries manifest.sig: pass --key PUBLIC_KEY, with the 'sign' extra)"
    else:
        signature = "not signed"
    say(f"ok: {bundle} ({loaded.manifest.schema}, {len(loaded.files)} files verified, "
        f"{len(loaded.graphs)} graphs load in onnxruntime); {signature}")


@handle_errors
def inspect(bundle: BundleArg) -> None:
    """Show a verified bundle: manifest fields, files, graph inputs/outputs and operator types."""
    from mtl.device_runtime import Bundle

    loaded = Bundle.load(bundle)
    console.print(_manifest_table(loaded))
    console.print(_files_table(loaded))
    console.print(_graphs_table(loaded))


def _manifest_table(bundle: Bundle) -> Table:
    m, spec = bundle.manifest, bundle.input_spec
    table = Table("field", "value", title=f"manifest ({bundle.label})", title_justify="left")
    rows = {"schema": m.schema,
            "producer": ", ".join(f"{k} {v}" for k, v in m.producer.items() if k != "splits"),
            "input": f"{spec.size}×{spec.size}, {spec.channels} channel(s), mean {list(spec.mean)}, std "
                     f"{list(spec.std)}, invert {spec.invert}, resize {spec.resize}",
            "feature_dim": str(m.feature_dim),
            "head": f"{m.head_type}, init {m.head_init}",
            "adapt": f"{m.steps} steps, lr {m.lr}, learned_lr {m.learned_lr}"
                     + ("" if m.context is None else f"; context of {m.context.dim}: {m.context.steps} steps, "
                        f"lr {m.context.lr}, after hidden {list(m.context.hidden)}"),
            "opset": str(m.opset),
            "init": ", ".join(f"{k} {v}" for k, v in m.init_arrays.items()) or "(none)"}
    for key, value in rows.items():
        table.add_row(key, _cell(value))
    return table


def _files_table(bundle: Bundle) -> Table:
    table = Table("file", "bytes", "sha256", title="files", title_justify="left")
    for name, data in bundle.files.items():
        table.add_row(name, f"{len(data):,}", bundle.manifest.files[name][:16] + "…")
    return table


def _graphs_table(bundle: Bundle) -> Table:
    table = Table("graph", "inputs", "outputs", "operators", title="graphs", title_justify="left")
    for name, info in bundle.graphs.items():
        spec = bundle.manifest.graphs[name]
        io = ["\n".join(f"{t.name} {t.dtype} [{', '.join(map(str, t.shape))}]" for t in getattr(spec, side))
              for side in ("inputs", "outputs")]
        ops = ", ".join(f"{op}×{n}" if n > 1 else op for op, n in sorted(info.op_types.items()))
        table.add_row(f"{name}\n({_cell(spec.file)})", *map(_cell, io), _cell(ops))
    return table


def _cell(text: str) -> str:
    """A table cell from bundle content: no markup (a producer string may hold "[red]"), newlines only where the
    table itself puts them, at most 300 characters a line."""
    return "\n".join(escape(one_line(line, 300)) for line in text.split("\n"))


bundle_app.command("verify")(verify)
bundle_app.command("inspect")(inspect)
