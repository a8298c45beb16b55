"""The JavaScript device runtime (device_runtime/web) against the Python one: the same bundle refused for the same
faults, the same preprocessing to the pixel, and the same adaptation and predictions — under Node (onnxruntime-node)
and in a real headless Chromium (onnxruntime-web, wasm), where the adapted classes also survive a reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtl.device_runtime import Bundle
from mtl.device_runtime.adapter import Adapter
from mtl.device_runtime.archive import zip_bytes
from mtl.device_runtime.errors import BundleError
from mtl.device_runtime.open_set import default_reject
from mtl.device_runtime.preprocess import RESIZE_METHODS, InputSpec, to_uint8
from tests.tolerance import assert_float_close
from tests.web.harness import browser_jobs, node_jobs, rgba_job, url
from tests.web.refusals import agreement_cases, refusal_corpus

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def mtlb(directory, path):
    path.write_bytes(zip_bytes({p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}))
    return path


# ------------------------------------------------------------------ refusals: one corpus, both runtimes
def test_every_bundle_of_the_refusal_corpus_is_refused_by_both_runtimes_naming_the_same_fault(tmp_path):
    corpus = refusal_corpus(tmp_path / "corpus")
    results = node_jobs([{"kind": "load", "bundle": str(case.path)} for case in corpus], tmp_path)
    for case, result in zip(corpus, results, strict=True):
        if case.culprit is None:  # the good bundle of the corpus
            Bundle.load(case.path)
            assert result == {"ok": True}, f"{case.name}: the web runtime refused a good bundle: {result}"
            continue
        with pytest.raises(BundleError) as python:
            Bundle.load(case.path)
        assert case.culprit in str(python.value), f"{case.name}: Python said {python.value}"
        assert "error" in result, f"{case.name}: the web runtime accepted a bundle Python refuses ({case.culprit})"
        assert result["error"].startswith("BundleError: ") and case.culprit in result["error"], \
            f"{case.name}: the web runtime said {result['error']!r}, not {case.culprit!r}"
        assert "\n" not in result["error"]


def test_where_the_runtimes_once_disagreed_they_now_give_the_same_answer(tmp_path):
    from mtl.device_runtime.errors import MtlError

    paths = agreement_cases(tmp_path / "cases")
    results = node_jobs([{"kind": "load", "bundle": str(path)} for path in paths], tmp_path)
    for path, js in zip(paths, results, strict=True):
        try:
            Bundle.load(path)
            python = None
        except MtlError as exc:
            python = f"BundleError: {exc}"
        assert js == ({"ok": True} if python is None else {"error": python}), (path.name, python, js)


# ------------------------------------------------------------------ preprocessing: Pillow's, to the pixel
def _sources(tmp_path):
    rng = np.random.default_rng(7)
    images = []
    for i, (w, h, mode) in enumerate([(105, 105, "1"), (61, 43, "L"), (20, 33, "RGB"), (9, 9, "P"), (300, 7, "L"),
                                      (28, 28, "L"), (64, 64, "RGB"), (7, 300, "L"), (30, 52, "RGB")]):
        array = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        image = Image.fromarray(array).convert(mode) if mode in ("1", "P") else Image.fromarray(array, mode)
        if mode == "P":
            image = Image.fromarray(array).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
        path = tmp_path / f"src{i}.png"
        image.save(path)
        images.append(path)
    return images


@pytest.mark.parametrize("channels", [1, 3])
def test_the_web_preprocessing_equals_pillows_for_every_filter_mode_and_size(channels, tmp_path):
    sources = _sources(tmp_path)
    jobs, specs = [], []
    for resize in sorted(RESIZE_METHODS):
        for size, invert in ((28, True), (84, False)):
            spec = InputSpec(size=size, channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels,
                             invert=invert, resize=resize)
            specs.append(spec)
            jobs.append({"kind": "preprocess", "spec": spec.to_dict(), "images": [rgba_job(p) for p in sources]})
    for spec, result in zip(specs, node_jobs(jobs, tmp_path), strict=True):
        for path, got in zip(sources, result["images"], strict=True):
            want = to_uint8(path, spec, path.name)
            diff = np.abs(np.asarray(got, np.int16).reshape(want.shape) - want)
            assert diff.max() == 0, f"{spec.resize} {spec.size} {path.name}: {int(diff.max())} levels off Pillow"


# ------------------------------------------------------------------ adaptation: the Python loop, step for step
def _synthetic_support(tmp_path, classes=4, shots=3, queries=2, size=16):
    """Support and query PNG files of separable synthetic glyphs; the queries at another size (resized on both)."""
    from tests.device_runtime.bundle_factory import glyph

    rng = np.random.default_rng(3)
    files = tmp_path / "files"
    support, query = {}, []
    for c in range(classes):
        folder = files / "support" / f"class {c}"
        folder.mkdir(parents=True)
        support[f"class {c}"] = []
        for k in range(shots + queries):
            image = Image.fromarray(glyph(c, rng))
            if k >= shots:
                image = image.resize((size * 3 + 1, size * 2 + 5), Image.Resampling.NEAREST)
                path = files / "query" / f"{c}-{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                query.append(path)
            else:
                path = folder / f"{k}.png"
                support[f"class {c}"].append(path)
            image.save(path)
    return files, support, query


def _python(bundle_path, support, query, **options):
    adapter = Adapter(Bundle.load(bundle_path))
    for name, paths in support.items():
        adapter.add_examples(name, paths)
    result = adapter.adapt(**options)
    labels, probs = adapter.predict(query)
    weight, bias = adapter.head
    return result, labels, probs, weight, bias


def _same(js, python, what):
    result, labels, probs, weight, bias = python
    assert "error" not in js, f"{what}: {js.get('error')}"
    assert js["labels"] == labels, what
    np.testing.assert_allclose(np.asarray(js["probabilities"]), probs, rtol=0, atol=1e-4, err_msg=what)
    assert_float_close(np.asarray(js["weight"]).reshape(weight.shape), weight, err_msg=f"{what}: weight")
    assert_float_close(np.asarray(js["bias"]), bias, err_msg=f"{what}: bias")
    assert_float_close(js["result"]["losses"] + [js["result"]["finalLoss"]], list(result.losses) + [result.final_loss],
                       err_msg=f"{what}: losses")


HEADS = [dict(head_init="learned"), dict(head_init="proto", learned_lr=True), dict(head_init="zero", steps=12, lr=0.5),
         dict(head_type="cosine", head_init="proto")]


@pytest.mark.parametrize("head", HEADS)
def test_node_adapts_and_predicts_as_the_python_runtime(head, tmp_path):
    from tests.device_runtime.bundle_factory import write_bundle

    path = mtlb(write_bundle(tmp_path / "bundle", **head), tmp_path / "bundle.mtlb")
    files, support, query = _synthetic_support(tmp_path)
    (js,) = node_jobs([{"kind": "adapt", "bundle": str(path), "queries": [rgba_job(p) for p in query],
                        "classes": {n: [rgba_job(p) for p in ps] for n, ps in support.items()}}], tmp_path)
    _same(js, _python(path, support, query), str(head))


def test_node_keeps_a_batch_statistics_support_set_as_images_like_the_python_runtime(tmp_path):
    """With batch statistics the support set is embedded as one batch at adapt and the queries of one call together
    (the tiny bundle's embed does not depend on the batch, but both runtimes take that path)."""
    from tests.device_runtime.bundle_factory import read_manifest, write_bundle, write_manifest

    directory = write_bundle(tmp_path / "bundle", head_init="proto")
    manifest = read_manifest(directory)
    manifest["batch_statistics"] = True
    write_manifest(directory, manifest)
    path = mtlb(directory, tmp_path / "bundle.mtlb")
    assert Bundle.load(path).keeps_images
    files, support, query = _synthetic_support(tmp_path)
    (js,) = node_jobs([{"kind": "adapt", "bundle": str(path), "queries": [rgba_job(p) for p in query],
                        "classes": {n: [rgba_job(p) for p in ps] for n, ps in support.items()}}], tmp_path)
    _same(js, _python(path, support, query), "batch statistics")


@pytest.fixture(scope="module")
def conv4_bundle(tmp_path_factory, pretrained_run):
    """The shared pretrained Conv-4 run (tests/conftest.py), exported: real convolutions, folded BatchNorm, a
    calibrated temperature, and support images of its own test classes."""
    from mtl.exporters.bundle_export import export_bundle
    from mtl.pipeline.data import load_data
    from mtl.pipeline.data.dump import dump_classes

    out = tmp_path_factory.mktemp("conv4")
    path = out / "files" / "bundle.mtlb"
    path.parent.mkdir()
    export_bundle(pretrained_run[0], path, single_file=True)
    manifest = Bundle.load(path).manifest
    data = load_data(manifest.producer["data"])
    dump_classes(data, list(manifest.producer["splits"]["test"])[:5], out / "files", shots=5, queries=3)
    query = sorted((out / "files" / "query").glob("*/*.png"))
    for i, image in enumerate(query[::3]):  # some queries at another size: resized by both runtimes
        with Image.open(image) as source:
            source.resize((source.width * 2 + 3, source.height * 2 + 3), Image.Resampling.BICUBIC).save(
                out / "files" / "query" / f"big-{i}.png")
    support = {p.name: sorted(p.glob("*.png")) for p in sorted((out / "files" / "support").iterdir())}
    return path, support, sorted((out / "files" / "query").rglob("*.png")), out / "files"


@pytest.fixture(scope="module")
def page_runs(conv4_bundle, tmp_path_factory):
    """Every browser job of this module in ONE Chromium (starting one costs seconds): the parity runs with 1 and 2
    wasm threads, a tampered bundle, the page clicked through, and the page offline — and the Python runtime's
    answers for the same images."""
    path, support, query, files = conv4_bundle
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    (files / "tampered.mtlb").write_bytes(bytes(data))
    signed, public = _signed_copy(path, files)
    classes = {n: [url(p, files) for p in ps] for n, ps in support.items()}
    queries = [url(q, files) for q in query]
    jobs = [*({"kind": "parity", "bundle": url(path, files), "queries": queries, "threads": t, "classes": classes}
              for t in (1, 2)),
            {"kind": "load", "bundle": url(files / "tampered.mtlb", files)},
            {"kind": "ui", "bundle": str(path), "queries": [str(q) for q in query],
             "classes": {n: [str(p) for p in ps] for n, ps in support.items()}},
            {"kind": "offline", "bundle": url(path, files), "queries": queries[:4], "classes": classes}]
    jobs.append({"kind": "decode", "images": [url(p, files) for p in _bad_images(files)]})
    if public is not None:  # the cryptography package signs the bundle
        jobs += [{"kind": "load", "bundle": url(signed, files), "key": url(public, files)},
                 {"kind": "load", "bundle": url(path, files), "key": url(public, files)}]
    results = browser_jobs(jobs, files, tmp_path_factory.mktemp("browser"))
    names = ("parity1", "parity2", "tampered", "ui", "offline", "decode", "signed", "unsigned")
    return dict(zip(names, results, strict=False)), \
        _python(path, support, query)


def _bad_images(files):
    """A decompression bomb (a 9000 × 9000 PNG of a few kB), a file that is no image, and a good image."""
    bomb = files / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)
    garbage = files / "garbage.png"
    garbage.write_bytes(b"\x89PNG not really an image")
    good = files / "good.png"
    Image.new("L", (40, 30), 128).save(good)
    rotated = files / "rotated.jpg"  # a phone photo: stored 40 × 30, its EXIF says "turn it a quarter"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 30), (200, 10, 10)).save(rotated, exif=exif)
    return [bomb, garbage, good, rotated]


def test_the_page_refuses_a_bomb_and_a_non_image_and_keeps_a_photo_as_stored(page_runs, conv4_bundle):
    from mtl.device_runtime.errors import DataError
    from mtl.device_runtime.preprocess import load_image

    files = conv4_bundle[3]
    bomb, garbage, good, rotated = page_runs[0]["decode"]["images"]
    with pytest.raises(DataError) as python:
        load_image(files / "bomb.png", Bundle.load(conv4_bundle[0]).input_spec)
    assert bomb["error"] == f"DataError: {str(python.value).replace(str(files / 'bomb.png'), 'bomb.png')}", bomb
    assert garbage["error"].startswith("DataError: cannot read image garbage.png: "), garbage
    assert good == {"width": 40, "height": 30}
    assert rotated == {"width": 40, "height": 30}, "the page turned the photo by its EXIF tag; Pillow does not"


def _signed_copy(path, files):
    """The bundle signed with a fresh key (or None, None without the cryptography package)."""
    try:
        from tests.device_runtime.test_signing import _keypair
    except pytest.skip.Exception:
        return path, None
    from mtl.device_runtime.signing import SIGNATURE, sign_manifest

    private, public = _keypair(files)
    bundle = Bundle.load(path)
    zipped = {name: data for name, data in bundle.files.items()}
    manifest = bundle._manifest_bytes
    signed = files / "signed.mtlb"
    signed.write_bytes(zip_bytes({"manifest.json": manifest, **zipped, SIGNATURE: sign_manifest(manifest, private)}))
    return signed, public


def test_a_page_with_a_pinned_key_takes_only_bundles_signed_with_it(page_runs, conv4_bundle):
    pytest.importorskip("cryptography")
    runs = page_runs[0]
    assert "signed" in runs
    assert runs["signed"] == {"ok": True}, runs["signed"]
    assert runs["unsigned"]["error"].startswith("BundleError: ") and "not signed (no manifest.sig)" in \
        runs["unsigned"]["error"], runs["unsigned"]


@pytest.mark.parametrize("threads", [1, 2])
def test_the_page_in_chromium_adapts_and_predicts_as_the_python_runtime_and_keeps_its_classes(page_runs, threads):
    runs, python = page_runs
    js = runs[f"parity{threads}"]
    _same(js, python, f"Chromium, {threads} wasm thread(s)")
    assert js["crossOriginIsolated"]
    # reloaded: the bundle and the adapted state come back from IndexedDB, and predict the same
    assert js["restored"]["labels"] == js["labels"]
    np.testing.assert_array_equal(js["restored"]["probabilities"], js["probabilities"])


def test_the_page_refuses_a_tampered_bundle_before_any_graph_is_made(page_runs, conv4_bundle):
    result = page_runs[0]["tampered"]
    with pytest.raises(BundleError) as python:
        Bundle.load(conv4_bundle[3] / "tampered.mtlb")
    assert result["error"].startswith("BundleError: ")
    culprit = str(python.value).split(": ")[1] if "cannot read member" in str(python.value) else "sha256"
    assert culprit in result["error"], (str(python.value), result["error"])


def test_the_demo_page_used_as_a_person_would_learns_the_classes_and_keeps_them(page_runs, conv4_bundle):
    page, (_, _, probs, _, _) = page_runs[0]["ui"], page_runs[1]
    path, support, query, _ = conv4_bundle
    # the page's "unknown" box starts as `mtl predict`'s --reject default: on for a bundle with a background
    adapter = Adapter(Bundle.load(path))
    assert default_reject(adapter.bundle.manifest.open_set) == "auto"  # the suite's calibrated Conv-4
    for name, paths in support.items():
        adapter.add_examples(name, paths)
    adapter.adapt()
    labels = adapter.predict(query, reject="auto")[0]
    assert "error" not in page, page.get("error")
    assert page["adapted"].startswith(f"adapted to {len(support)} classes"), page["adapted"]
    shown = [line.split(" — ") for line in page["results"]]
    assert [label.strip() for label, _ in shown] == labels
    for (_, confidence), row in zip(shown, probs, strict=True):
        assert confidence.startswith(f"{100 * row.max():.1f} %"), (confidence, row.max())
    assert page["afterReload"]["status"].startswith(f"restored {len(support)} adapted classes")
    assert all(name in page["afterReload"]["learned"] for name in support)


def test_the_page_works_offline_once_loaded_with_its_classes(page_runs, conv4_bundle):
    js, (_, labels, probs, _, _) = page_runs[0]["offline"], page_runs[1]
    assert "error" not in js, js.get("error")
    assert js["controlled"], "the service worker did not take the page"
    assert js["status"].startswith(f"restored {len(conv4_bundle[1])} adapted classes"), js["status"]
    assert js["labels"] == labels[:4]
    np.testing.assert_allclose(np.asarray(js["probabilities"]), probs[:4], rtol=0, atol=1e-4)


def test_the_web_runtime_holds_the_schema_of_device_runtime_schema_py(tmp_path):
    """The JavaScript runtime's copy of the bundle's names, limits and graph interfaces is the Python schema's: a
    change to `device_runtime/schema.py` that the web runtime does not follow fails here."""
    from mtl.device_runtime import archive, open_set, schema
    from mtl.device_runtime.preprocess import RESIZE_METHODS
    from mtl.device_runtime.signing import SIGNATURE

    context = schema.Context(dim=100, hidden=(64, 7, 7), steps=2, lr=0.5)
    calls = [(1, 28, 64, 0, None), (3, 84, 640, 0, None), (1, 28, 64, 42, None), (1, 28, 64, 0, context)]
    (js,) = node_jobs([{"kind": "schema", "io": [[c, s, d, st, None if ctx is None else ctx.to_dict()]
                                                 for c, s, d, st, ctx in calls]}], tmp_path)
    assert (js["SCHEMA"], js["MANIFEST"], js["SIGNATURE"]) == (schema.SCHEMA, schema.MANIFEST, SIGNATURE)
    for name in ("HEAD_TYPES", "HEAD_INITS", "UPDATE_RULES", "DTYPES", "GRAPH_NAMES", "CONTEXT_GRAPHS"):
        assert tuple(js[name]) == getattr(schema, name), name
    assert sorted(js["RESIZE_METHODS"]) == sorted(RESIZE_METHODS)
    assert js["STANDARD_DOMAINS"] == sorted(schema.STANDARD_DOMAINS)
    assert {k: tuple(v) for k, v in js["LIMITS"].items()} == schema.LIMITS
    assert (js["MAX_FILES"], js["MAX_NAME"]) == (schema.MAX_FILES, schema.MAX_NAME)
    assert (js["BACKGROUND"], js["MAX_BACKGROUND"]) == (schema.BACKGROUND, schema.MAX_BACKGROUND)
    assert js["BACKGROUND_TOP"] == open_set.BACKGROUND_TOP
    assert js["archive"] == {name: getattr(archive, name) for name in js["archive"]}
    for (c, s, d, st, ctx), io in zip(calls, js["io"], strict=True):
        want = schema.graph_io(c, s, d, st, ctx)
        assert list(io) == list(want)
        for name, graph in want.items():
            for side in ("inputs", "outputs"):
                assert io[name][side] == [t.to_dict() for t in getattr(graph, side)], (name, side)


def test_hostile_manifests_are_refused_by_the_web_runtime_exactly_when_python_refuses_them(tmp_path):
    """The property test's hostile manifests (tests/device_runtime/test_hostile_manifests.py: wrong types, values at
    and past every range, huge or nested values, missing or extra keys), each run through both runtimes: the web
    runtime must accept exactly the bundles Python accepts, and refuse the others with the same message."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mtl.device_runtime.errors import MtlError
    from tests.device_runtime.bundle_factory import read_manifest, write_bundle
    from tests.device_runtime.test_hostile_manifests import _edit

    good = write_bundle(tmp_path / "good")
    manifest = read_manifest(good)
    files = {p.name: p.read_bytes() for p in good.iterdir()}
    cases = []

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(data=st.data())
    def collect(data):
        path = tmp_path / f"edited-{len(cases)}.mtlb"
        path.write_bytes(zip_bytes({**files, "manifest.json": _edit(manifest, data).encode()}))
        try:
            Bundle.load(path)
            cases.append((path, None))
        except MtlError as exc:
            cases.append((path, str(exc)))

    collect()
    results = node_jobs([{"kind": "load", "bundle": str(path)} for path, _ in cases], tmp_path)
    assert any(python is None for _, python in cases) and any(python for _, python in cases)
    for (path, python), js in zip(cases, results, strict=True):
        if python is None:
            assert js == {"ok": True}, f"{path.name}: Python accepts it, the web runtime says {js}"
        else:
            assert "error" in js, f"{path.name}: Python refuses it ({python}), the web runtime accepts it"
            web = js["error"].split(": ", 1)[1]
            # the same message, up to the first character Python escapes as \u / \U: whether a code point is
            # assigned (printable) depends on the Unicode version of each runtime (Python 3.11 knows 14.0)
            cut = min((i for i in (python.find("\\u"), python.find("\\U")) if i >= 0), default=len(python))
            assert web[:cut] == python[:cut] and len(web) >= cut, f"{path.name}:\n python: {python}\n web:    {web}"


def test_signed_bundles_are_checked_by_the_web_runtime_as_by_python(tmp_path):
    """With a key (PEM Ed25519), both runtimes accept the bundle it signed and refuse, with the same message, an
    unsigned one, one signed by another key, a consistently edited manifest and a flipped signature byte."""
    pytest.importorskip("cryptography")
    from mtl.device_runtime.errors import MtlError
    from mtl.device_runtime.signing import SIGNATURE, sign_manifest
    from tests.device_runtime.bundle_factory import read_manifest, write_bundle, write_manifest
    from tests.device_runtime.test_signing import _keypair

    private, public = _keypair(tmp_path)
    other_private, _ = _keypair(tmp_path, "other")
    cases = {}
    for fault in ("signed", "unsigned", "other-key", "manifest-edited", "signature-flipped"):
        directory = write_bundle(tmp_path / fault)
        signer = other_private if fault == "other-key" else private
        (directory / SIGNATURE).write_bytes(sign_manifest((directory / "manifest.json").read_bytes(), signer))
        if fault == "unsigned":
            (directory / SIGNATURE).unlink()
        elif fault == "manifest-edited":  # files and digests still agree: only the signer did not write this
            manifest = read_manifest(directory)
            manifest["adapt"]["steps"] = 7
            write_manifest(directory, manifest)
        elif fault == "signature-flipped":
            signature = bytearray((directory / SIGNATURE).read_bytes())
            signature[10] ^= 0x01
            (directory / SIGNATURE).write_bytes(bytes(signature))
        cases[fault] = mtlb(directory, tmp_path / f"{fault}.mtlb")
    not_a_key = tmp_path / "not-a-key.pub"
    not_a_key.write_text("hello")
    jobs = [{"kind": "load", "bundle": str(path), "key": str(public)} for path in cases.values()]
    results = node_jobs(jobs + [{"kind": "load", "bundle": str(cases["signed"]), "key": str(not_a_key)}], tmp_path)
    for (fault, path), js in zip(cases.items(), results[:-1], strict=True):
        if fault == "signed":
            assert Bundle.load(path, key=public).signature is not None and js == {"ok": True}, js
            continue
        with pytest.raises(MtlError) as python:
            Bundle.load(path, key=public)
        assert js.get("error") == f"BundleError: {python.value}", (fault, js, str(python.value))
    assert results[-1]["error"].startswith(f"ConfigError: {not_a_key} is not an unencrypted PEM public key")


@pytest.mark.parametrize("reject", ["auto", "calibrated", "background", 0.9])
def test_node_says_unknown_where_the_python_runtime_does(reject, tmp_path):
    """`reject`: leave-one-class-out `auto`, `auto` with the bundle's calibrated thresholds (interpolated in log K at
    3 shots), the same with scores relative to a background in init.npz, or an explicit score: the same scores,
    threshold and "unknown" labels."""
    from mtl.device_runtime import open_set
    from mtl.device_runtime.schema import BACKGROUND
    from tests.device_runtime.bundle_factory import DIM, add_background, read_manifest, write_bundle, write_manifest

    directory, twins = write_bundle(tmp_path / "bundle", head_init="proto"), 0
    files, support, query = _synthetic_support(tmp_path, classes=3)
    if reject == "background":  # random rows, and one that is class 0's own mean (left out: SAME_CLASS)
        plain = Bundle.load(directory)
        twin = open_set.prototypes(plain.embed(plain.preprocess(support["class 0"])), np.zeros(3, np.int64), 1)
        rows = np.random.default_rng(5).normal(size=(7, DIM))
        rows = np.concatenate([rows / np.linalg.norm(rows, axis=1, keepdims=True), twin])
        add_background(directory, rows, {"1": 0.1, "5": 0.3})
        reject, twins = "auto", 1
    if reject == "calibrated":
        manifest = read_manifest(directory)
        manifest["open_set"] = {"known_loss": 0.05, "thresholds": {"1": 0.55, "5": 0.8}, "ways": 5, "episodes": 9}
        write_manifest(directory, manifest)
        reject = "auto"
    path = mtlb(directory, tmp_path / "bundle.mtlb")
    _, unknown_support, _ = _synthetic_support(tmp_path / "others", classes=5)
    query = query + [paths[0] for name, paths in unknown_support.items() if name in ("class 3", "class 4")]
    adapter = Adapter(Bundle.load(path))
    for name, paths in support.items():
        adapter.add_examples(name, paths)
    adapter.adapt()
    labels, probs, scores, limit = adapter.predict_scored(query, reject)
    if twins:  # the row that is class 0's mean is left out, the random ones are not
        kept = open_set.not_adapted(open_set.prototypes(*adapter._support_set(), 3), adapter.bundle.init[BACKGROUND])
        assert len(kept) == len(adapter.bundle.init[BACKGROUND]) - twins
    (js,) = node_jobs([{"kind": "adapt", "bundle": str(path), "queries": [rgba_job(p) for p in query],
                        "classes": {n: [rgba_job(p) for p in ps] for n, ps in support.items()}, "reject": reject}],
                      tmp_path)
    assert js["labels"] == labels
    if reject == 0.9:  # the tiny bundle's random features: this threshold rejects some queries, not all
        assert "unknown" in labels and set(labels) != {"unknown"}, labels
    assert_float_close(js["scores"], scores, err_msg="scores")
    assert_float_close(js["threshold"], limit, err_msg="threshold")
    np.testing.assert_allclose(np.asarray(js["probabilities"]), probs, rtol=0, atol=1e-4)


def _interlaced_png(path, pixels):
    """An 8-bit grey Adam7-interlaced PNG (Pillow writes none), rows unfiltered."""
    import struct
    import zlib

    height, width = pixels.shape
    raw = b""
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)]:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("channels", [1, 3])
def test_the_pages_png_decoder_gives_pillows_pixels_for_every_kind_of_png(channels, tmp_path):
    """What the page does with a PNG (src/png.js, not the browser's decoder, whose canvas would turn transparent
    pixels black): every colour type, 1–16 bits, palettes with transparency, transparent RGBA, interlacing."""
    rng = np.random.default_rng(11)
    rgb = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    images = {"1": Image.fromarray(grey).convert("1"), "L": Image.fromarray(grey), "RGB": Image.fromarray(rgb),
              "P": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)}
    rgba = np.dstack([rgb, rng.choice([0, 40, 255], (23, 31)).astype(np.uint8)])
    images["RGBA"] = Image.fromarray(rgba, "RGBA")
    images["LA"] = Image.fromarray(np.dstack([grey, rgba[..., 3]]), "LA")
    files = []
    for mode, image in images.items():
        files.append(tmp_path / f"{mode}.png")
        image.save(files[-1])
    p_transparent = images["P"].copy()
    p_transparent.info["transparency"] = 3
    p_transparent.save(tmp_path / "P-transparent.png", transparency=3)
    images["P"].quantize(colors=12).save(tmp_path / "P-4bit.png", bits=4)
    files += [tmp_path / "P-transparent.png", tmp_path / "P-4bit.png",
              _interlaced_png(tmp_path / "interlaced.png", grey)]
    spec = InputSpec(size=28, channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels, invert=True)
    (result,) = node_jobs([{"kind": "png", "spec": spec.to_dict(), "files": [str(f) for f in files]}], tmp_path)
    for path, got in zip(files, result["images"], strict=True):
        want = to_uint8(path, spec, path.name)
        assert not isinstance(got, str), f"{path.name}: {got}"
        diff = np.abs(np.asarray(got, np.int16).reshape(want.shape) - want)
        assert diff.max() == 0, f"{path.name}: {int(diff.max())} levels off Pillow"


def test_a_16_bit_grey_png_is_refused_by_the_page_as_by_python(tmp_path):
    from mtl.device_runtime.errors import DataError
    from mtl.device_runtime.preprocess import load_image

    path = tmp_path / "deep.png"
    Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100).save(path)
    spec = InputSpec(size=28)
    with pytest.raises(DataError) as python:
        load_image(path, spec)
    (result,) = node_jobs([{"kind": "png", "spec": spec.to_dict(), "files": [str(path)]}], tmp_path)
    assert result["images"] == [f"DataError: {python.value}"]


@pytest.mark.parametrize("algorithm", ["caml", "meta-lstm"])
def test_node_adapts_a_context_and_a_learned_update_rule_as_the_python_runtime(algorithm, tmp_path):
    """The two update paths beside SGD: CAML's context (context_step.onnx from φ = 0, then the head started from the
    φ-conditioned features) and the meta-LSTM's learned rule (its state threaded through the steps). Bundles of one
    meta-training iteration on synthetic glyphs: the weights do not matter, the path does."""
    pytest.importorskip("torch", reason="the bundles are exported from a one-iteration meta-training")
    from mtl.exporters.bundle_export import export_bundle
    from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train

    run = tmp_path / algorithm
    meta_train(MetaTrainConfig(out=str(run), algorithm=algorithm, data="synthetic:20", image_size=28, ways=3, shots=1,
                               queries=1, meta_batch=1, inner_steps=2, iterations=1, val_every=1, val_episodes=2,
                               device="cpu", calibrate_episodes=0))
    path = Path(export_bundle(run, tmp_path / f"{algorithm}.mtlb", single_file=True).path)
    files, support, query = _synthetic_support(tmp_path)
    (js,) = node_jobs([{"kind": "adapt", "bundle": str(path), "queries": [rgba_job(p) for p in query],
                        "classes": {n: [rgba_job(p) for p in ps] for n, ps in support.items()}}], tmp_path)
    python = _python(path, support, query)
    _same(js, python, algorithm)
    result = python[0]
    assert js["result"]["contextSteps"] == result.context_steps and js["result"]["steps"] == result.steps
    assert (result.context_steps > 0) == (algorithm == "caml")  # CAML exports 0 head steps, the LSTM 2
    assert (result.steps > 0) == (algorithm != "caml")
    assert_float_close(js["result"]["contextLosses"], list(result.context_losses), err_msg="context losses")
