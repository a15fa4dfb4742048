"""The GPU fast paths against the plain CPU paths.

JPEG decoding on the GPU (indexer.media.gpu_jpeg) and exact search in torch (indexer.store.gpu_search) are
written device-agnostic, so their logic is checked here on the CPU; the tests marked `cuda` run the
same comparisons on a GPU and skip without one.
"""
from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from indexer.errors import DecodeError
from indexer.media.gpu_jpeg import GpuJpegEmbedder, jpeg_header, pixels_from_decoded
from indexer.media.image import DecodeOptions, decode_image
from indexer.media.image_reader import ImageReader, ImageReadOptions, PixelEncoder
from indexer.media.preprocess import PreprocessConfig
from indexer.media.scan import FoundFile
from indexer.pipeline.embed import PipelineConfig, embed_batches, prepare_files
from indexer.pipeline.workers import WorkersStalledError, WorkerThreads
from retrieval.media import media_for

torch = pytest.importorskip("torch")
torchvision_io = pytest.importorskip("torchvision.io")


def cuda(test):
    """Run with `-m gpu` on a CUDA machine; skipped without one."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


def photo(seed: int, size=(640, 480)) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 20, size[0] // 20, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BILINEAR)


def jpeg_bytes(image: Image.Image, orientation: int = 1, quality: int = 92) -> bytes:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def decode_on(data: list[bytes], device: str):
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg([torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in data],
                       mode=ImageReadMode.RGB, device=device)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_tensor_preprocessing_matches_the_pil_path(orientation, resize_mode):
    """Same pixels as decode_image's full decode to one 8-bit level, for every EXIF orientation."""
    cfg = PreprocessConfig(image_size=64, resize_mode=resize_mode)
    data = jpeg_bytes(photo(orientation, (400, 300)), orientation)
    reference = decode_image(data, cfg, DecodeOptions(draft=False))
    header = jpeg_header(data, DecodeOptions())
    assert (header.width, header.height, header.orientation) == (reference.width, reference.height, orientation)
    pixels = pixels_from_decoded(decode_on([data], "cpu"), [header.orientation], cfg)[0].numpy()
    assert pixels.shape == reference.pixels.shape
    one_level = 1 / 255 / min(cfg.std) + 1e-4
    assert np.abs(pixels - reference.pixels).max() <= one_level
    assert np.abs(pixels - reference.pixels).mean() < 0.01


@pytest.mark.parametrize("size", [(1600, 1200), (400, 300)])
def test_draft_reduction_matches_pils_draft_decode(size):
    """DecodeOptions.draft (the default): power-of-two block averages stand in for PIL's DCT scaling;
    the pixels stay as close to the CPU's draft decode as an exact resize would."""
    from indexer.media.gpu_jpeg import draft_factor

    cfg = PreprocessConfig(image_size=64)
    assert draft_factor(size[1], size[0], cfg.image_size) > 1
    data = jpeg_bytes(photo(5, size))
    reference = decode_image(data, cfg, DecodeOptions(draft=True)).pixels
    decoded = decode_on([data], "cpu")
    drafted = pixels_from_decoded(decoded, [1], cfg, draft=True)[0].numpy()
    exact = pixels_from_decoded(decoded, [1], cfg, draft=False)[0].numpy()
    assert np.abs(drafted - reference).mean() < 0.01
    assert np.abs(drafted - reference).max() < 0.15
    assert np.abs(drafted - reference).mean() <= 2 * np.abs(exact - reference).mean()


def test_a_batch_of_mixed_shapes_gives_each_image_its_own_pixels():
    """Images are resized in groups of one shape; every image must come back in its own place."""
    cfg = PreprocessConfig(image_size=48)
    sizes = [(400, 300), (300, 400), (400, 300), (160, 120), (400, 300)]
    orientations = [1, 6, 3, 1, 8]
    data = [jpeg_bytes(photo(10 + i, size), orientation) for i, (size, orientation) in enumerate(zip(sizes, orientations))]
    decoded = decode_on(data, "cpu")
    together = pixels_from_decoded(decoded, orientations, cfg, draft=True)
    assert together.shape == (len(data), 3, 48, 48)
    for i, (image, orientation) in enumerate(zip(decoded, orientations)):
        alone = pixels_from_decoded([image], [orientation], cfg, draft=True)[0]
        assert torch.equal(together[i], alone)


def test_greyscale_jpeg_becomes_three_equal_channels():
    cfg = PreprocessConfig(image_size=32)
    data = jpeg_bytes(photo(3, (120, 90)).convert("L"))
    reference = decode_image(data, cfg, DecodeOptions(draft=False))
    pixels = pixels_from_decoded(decode_on([data], "cpu"), [1], cfg)[0].numpy()
    assert np.abs(pixels - reference.pixels).max() <= 1 / 255 / min(cfg.std) + 1e-4


def test_header_keeps_the_pixel_budget_and_leaves_odd_jpegs_to_the_cpu():
    data = jpeg_bytes(photo(1, (2000, 1000)))
    with pytest.raises(DecodeError, match="megapixels"):
        jpeg_header(data, DecodeOptions(max_megapixels=1.0))
    cmyk = io.BytesIO()
    photo(2).convert("CMYK").save(cmyk, "JPEG")
    assert jpeg_header(cmyk.getvalue(), DecodeOptions()) is None
    with pytest.raises(DecodeError):
        jpeg_header(b"\xff\xd8\xff" + b"garbage" * 10, DecodeOptions())
    # nvJPEG would decode a truncated file without complaint (grey below the cut): the CPU decides
    whole = jpeg_bytes(photo(3))
    assert jpeg_header(whole, DecodeOptions()) is not None
    assert jpeg_header(whole[:len(whole) // 2], DecodeOptions()) is None
    assert jpeg_header(whole + b"\x00" * 16, DecodeOptions()) is not None  # padding after EOI is fine


def write_files(folder, count: int) -> list[FoundFile]:
    """JPEGs (one CMYK, one truncated) and a PNG: every route through the deferred pipeline."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"photo{n}.jpg"
        path.write_bytes(jpeg_bytes(photo(10 + n), orientation=1 + n % 8))
        paths.append(path)
    cmyk = folder / "cmyk.jpg"
    photo(40).convert("CMYK").save(cmyk, "JPEG")
    truncated = folder / "truncated.jpg"  # a readable header, half the pixel data
    whole = jpeg_bytes(photo(41))
    truncated.write_bytes(whole[:len(whole) // 2])
    png = folder / "plain.png"
    photo(42).save(png)
    paths += [cmyk, truncated, png]
    return [FoundFile(str(path), path.stat().st_size, path.stat().st_mtime) for path in paths]


def image_setup(model, defer: bool, *, draft: bool = True, assist: float | None = 4.0, batch_size: int = 4,
                workers: int = 2, decode_timeout_s: float | None = 30.0):
    """(readers by extension, encoders, pipeline config, GPU JPEG embedder or None) of an image run;
    `defer` as a CUDA run does it (headers on the threads, pixels for the embedder, files unordered)."""
    reader = ImageReader(model.preprocess, ImageReadOptions(decode=DecodeOptions(draft=draft), defer_jpeg=defer,
                                                            assist_megapixels=assist))
    embedder = GpuJpegEmbedder(model.image, model.preprocess, reader.options.decode) if defer else None
    encoder = PixelEncoder(model.info, model.image.embed_pixels, embedder.embed if embedder else None)
    config = PipelineConfig(batch_size=batch_size, workers=workers, unordered=defer, decode_timeout_s=decode_timeout_s)
    return {extension: reader for extension in reader.extensions}, {"image": encoder}, config, embedder


def run_pipeline(files, model, defer: bool, device: str):
    readers, encoders, pipeline, embedder = image_setup(model, defer, draft=False)
    rows = []
    for batch in embed_batches(prepare_files(files, {}, readers, pipeline), encoders, pipeline):
        rows.extend(batch)
    return {row.path: row for row in rows}, embedder


def check_same_rows(plain, deferred, min_cosine: float):
    assert plain.keys() == deferred.keys()
    for path, row in plain.items():
        other = deferred[path]
        assert (row.width, row.height, row.format, row.error is None) == \
               (other.width, other.height, other.format, other.error is None), path
        if row.vectors:
            assert float(row.vectors[0].vector @ other.vectors[0].vector) >= min_cosine, path


def test_deferred_jpeg_pipeline_gives_the_plain_pipelines_rows(tmp_path, tiny_model):
    """Header on the worker, pixels decoded by the embedder (here on the CPU): same rows, same vectors."""
    files = write_files(tmp_path / "photos", 10)
    plain, _ = run_pipeline(files, tiny_model, defer=False, device="cpu")
    deferred, embedder = run_pipeline(files, tiny_model, defer=True, device="cpu")
    check_same_rows(plain, deferred, min_cosine=0.999)
    assert deferred[str(tmp_path / "photos" / "truncated.jpg")].error  # refused, as the CPU path refuses it
    assert embedder.fallbacks == 0  # CMYK and the truncated JPEG never reached the GPU decoder


def test_threads_decode_big_jpegs_themselves_when_the_gpu_has_a_batch_waiting(tmp_path, tiny_model):
    """--assist-megapixels: a decode thread decodes a JPEG itself, instead of leaving it to the
    GPU, when a full batch of JPEGs already waits for the GPU; the rows are the plain pipeline's."""
    files = write_files(tmp_path / "photos", 8)
    plain, _ = run_pipeline(files, tiny_model, defer=False, device="cpu")
    readers, encoders, pipeline, _ = image_setup(tiny_model, True, draft=False, assist=0.0, batch_size=2, workers=1)
    routes = []

    def slow(prepared):  # a busy GPU: the one thread gets ahead of it
        for item in prepared:
            routes.append("other" if item.decoded is None else "gpu" if item.decoded.deferred else "cpu")
            yield item
            time.sleep(0.03)

    rows = {}
    for batch in embed_batches(slow(prepare_files(files, {}, readers, pipeline)), encoders, pipeline):
        rows.update((row.path, row) for row in batch)
    check_same_rows(plain, rows, min_cosine=0.999)
    assert routes[0] == "gpu" and "cpu" in routes, routes  # nothing waits for the GPU at first
    # below the size limit, or with the assist off, every JPEG header goes to the GPU
    for limit in (1.0, None):
        routes.clear()
        readers, _, config, _ = image_setup(tiny_model, True, assist=limit, batch_size=2, workers=1)
        list(slow(prepare_files(files[:4], {}, readers, config)))
        assert routes == ["gpu"] * 4, (limit, routes)


def hang_reads(monkeypatch, paths, release: threading.Event, delay: float | None = None):
    import indexer.pipeline.embed

    real = indexer.pipeline.embed.read_file_checked

    def read(path):
        if path in paths:
            if delay is None:
                release.wait(30)
            else:
                time.sleep(delay)
        return real(path)

    monkeypatch.setattr(indexer.pipeline.embed, "read_file_checked", read)


@pytest.mark.parametrize("gpu_run", [False, True])
def test_a_hung_read_is_given_up_in_order_and_out_of_order(tmp_path, tiny_model, monkeypatch, gpu_run):
    """A GPU run (defer_jpeg) takes files as they finish, not in order; the time budget holds in both."""
    files = write_files(tmp_path / "photos", 6)
    stuck = files[2].path
    release = threading.Event()
    hang_reads(monkeypatch, {stuck}, release)
    readers, _, config, _ = image_setup(tiny_model, gpu_run, batch_size=2, decode_timeout_s=0.3)
    try:
        out = list(prepare_files(files, {}, readers, config))
    finally:
        release.set()
    assert sorted(item.file.path for item in out) == sorted(file.path for file in files)
    errors = {item.file.path: item.error for item in out if item.error}
    assert "longer than 0.3 s" in errors[stuck]
    if not gpu_run:
        assert [item.file.path for item in out] == [file.path for file in files]


def test_a_hung_read_is_given_up_while_other_files_keep_finishing(tmp_path, tiny_model, monkeypatch):
    """Out of order, the time budget must not wait for a pause in the flow of finished files."""
    import indexer.pipeline.embed

    folder = tmp_path / "many"
    folder.mkdir()
    files = []
    for n in range(60):
        path = folder / f"p{n:02d}.jpg"
        path.write_bytes(jpeg_bytes(photo(n, (64, 48))))
        files.append(FoundFile(str(path), path.stat().st_size, path.stat().st_mtime))
    stuck, release = files[1].path, threading.Event()
    real = indexer.pipeline.embed.read_file_checked

    def read(path):
        if path == stuck:
            release.wait(30)
        else:
            time.sleep(0.02)  # a steady flow: a file finishes every 10 ms on the other thread
        return real(path)

    monkeypatch.setattr(indexer.pipeline.embed, "read_file_checked", read)
    readers, _, config, _ = image_setup(tiny_model, True, decode_timeout_s=0.2)
    out = []
    try:
        for item in prepare_files(files, {}, readers, config):
            out.append(item)
    finally:
        release.set()
    given_up = [n for n, item in enumerate(out) if item.error]
    assert [out[n].file.path for n in given_up] == [stuck]
    assert given_up[0] < len(files) - 10  # long before the end of the run (the run takes ~0.6 s)


def test_a_gpu_run_is_not_held_up_by_one_slow_file(tmp_path, tiny_model, monkeypatch):
    """The first file's read waits until every other file has come out: in order, nothing would."""
    files = write_files(tmp_path / "photos", 6)
    release = threading.Event()
    hang_reads(monkeypatch, {files[0].path}, release)
    readers, _, config, _ = image_setup(tiny_model, True, batch_size=2)
    out = []
    try:
        for item in prepare_files(files, {}, readers, config):
            out.append(item.file.path)
            if len(out) == len(files) - 1:
                release.set()
    finally:
        release.set()
    assert sorted(out) == sorted(file.path for file in files)
    assert out[-1] == files[0].path


def test_a_stalled_drive_stops_a_gpu_run(tmp_path, tiny_model, monkeypatch):
    files = write_files(tmp_path / "photos", 8)
    release = threading.Event()
    hang_reads(monkeypatch, {file.path for file in files}, release)
    monkeypatch.setattr(WorkerThreads, "max_stuck", 2)
    readers, _, config, _ = image_setup(tiny_model, True, batch_size=2, decode_timeout_s=0.2)
    try:
        with pytest.raises(WorkersStalledError, match="network drive stalled"):
            list(prepare_files(files, {}, readers, config))
    finally:
        release.set()


@cuda
def test_gpu_decode_and_embed_matches_cpu(tmp_path, tiny_model_config):
    from retrieval.models.encoders import load_model

    files = write_files(tmp_path / "photos", 12)
    cpu_model = load_model(str(tiny_model_config), device="cpu")
    gpu_model = load_model(str(tiny_model_config), device="cuda")
    plain, _ = run_pipeline(files, cpu_model, defer=False, device="cpu")
    deferred, _ = run_pipeline(files, gpu_model, defer=True, device="cuda")
    check_same_rows(plain, deferred, min_cosine=0.99)  # bf16 autocast on the GPU


# --- search -------------------------------------------------------------------------------------
def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((16, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 16, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def faiss_exact(ids, vectors, queries, k, allowed=None):
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, ids)
    params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed)) if allowed is not None else None
    return index.search(queries, k, params=params)


@pytest.mark.parametrize("n", [7, 5000])
def test_torch_exact_search_equals_faiss_brute_force(n, monkeypatch):
    from indexer.store import gpu_search

    monkeypatch.setattr(gpu_search, "SCORE_BUDGET_BYTES", 4 * 1024 * 64)  # many chunks: the merge is exercised
    vectors = clustered(n, 32, seed=n)
    ids = np.arange(1000, 1000 + n, dtype=np.int64)[::-1].copy()
    queries = clustered(50, 32, seed=99)
    index = gpu_search.TorchExactIndex(ids, vectors, device="cpu")
    scores, found = index.search(queries, 10)
    want_scores, want_ids = faiss_exact(ids, vectors, queries, min(10, n))
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert (found == want_ids).mean() > 0.99  # ties aside, the same items in the same order


def test_torch_exact_search_with_allowed_ids_and_short_results():
    from indexer.store.gpu_search import TorchExactIndex

    vectors = clustered(300, 16, seed=1)
    ids = np.arange(300, dtype=np.int64) * 3
    allowed = ids[::50]  # 6 items
    index = TorchExactIndex(ids, vectors, device="cpu")
    scores, found = index.search(vectors[:4], 10, allowed_ids=allowed)
    want_scores, want_ids = faiss_exact(ids, vectors, vectors[:4], 10, allowed)
    assert set(found[:, :6].ravel()) <= set(allowed)
    np.testing.assert_array_equal(found[:, 6:], -1)
    np.testing.assert_array_equal(found[:, :6], want_ids[:, :6])
    np.testing.assert_allclose(scores[:, :6], want_scores[:, :6], atol=1e-5)


@cuda
def test_fp16_search_on_the_gpu_keeps_recall():
    from indexer.store.gpu_search import TorchExactIndex

    vectors = clustered(20_000, 128, seed=5)
    ids = np.arange(20_000, dtype=np.int64)
    queries = clustered(200, 128, seed=6)
    _, found = TorchExactIndex(ids, vectors, device="cuda").search(queries, 10)
    _, want = faiss_exact(ids, vectors, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), want.tolist())])
    assert recall >= 0.98


def index_photos(tmp_path, model, count: int) -> None:
    """`count` PNG photos in tmp_path/photos, indexed into tmp_path/db."""
    from indexer.pipeline.sync import IndexConfig, index_folders
    from indexer.store.library import Library

    folder = tmp_path / "photos"
    folder.mkdir()
    for n in range(count):
        photo(n, (96, 72)).save(folder / f"p{n}.png")
    with Library(tmp_path / "db") as library:
        index_folders(library, media_for(model), IndexConfig(roots=(str(folder),)))


def test_rank_uses_the_gpu_path_only_for_cuda_batches(tmp_path, tiny_model, monkeypatch):
    """A CUDA device with a big enough batch goes through indexer.store.gpu_search; the hits match the CPU's."""
    from indexer.store import gpu_search
    from indexer.store.library import Library
    from retrieval.query import search

    index_photos(tmp_path, tiny_model, 12)
    calls = []

    def on_cpu(library, device):
        calls.append(device)
        return gpu_search.TorchExactIndex.from_chunks(library.reads.iter_vectors(64), 64, device="cpu")

    monkeypatch.setattr(gpu_search, "gpu_index", on_cpu)
    queries = tiny_model.text.embed_texts([f"query {n}" for n in range(search.GPU_MIN_QUERIES)])
    with Library(tmp_path / "db", create=False, read_only=True) as library:
        expected = search.rank(library, queries, 5)
        got = search.rank(library, queries, 5, device="cuda:0")
        search.rank(library, queries[:3], 5, device="cuda:0")  # too few queries: stays on the CPU
    assert calls == ["cuda:0"]
    assert [[hit.path for hit in hits] for hits in got] == [[hit.path for hit in hits] for hits in expected]


@cuda
def test_rank_on_the_gpu_matches_the_cpu(tmp_path, tiny_model):
    from indexer.store.library import Library
    from retrieval.query import search

    index_photos(tmp_path, tiny_model, 40)
    queries = tiny_model.text.embed_texts([f"query {n}" for n in range(search.GPU_MIN_QUERIES)])
    with Library(tmp_path / "db", create=False, read_only=True) as library:
        expected = search.rank(library, queries, 5)
        got = search.rank(library, queries, 5, device="cuda")
    same = np.mean([[h.path for h in a] == [h.path for h in b] for a, b in zip(got, expected)])
    assert same >= 0.95  # fp16 scores may swap near-ties


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_gpu_decode_on_without_cuda_is_a_clear_error(tmp_path, tiny_model_config, device):
    from typer.testing import CliRunner

    from cli.app import app

    pics = tmp_path / "pics"
    pics.mkdir()
    photo(1, (96, 72)).save(pics / "a.jpg")
    result = CliRunner().invoke(app, ["index", str(pics), "--db", str(tmp_path / "db"), "--model", str(tiny_model_config),
                                      "--device", device, "--gpu-decode", "on"])
    assert result.exit_code == 1
    assert "--gpu-decode on needs a CUDA device" in result.stderr
    off = CliRunner().invoke(app, ["index", str(pics), "--db", str(tmp_path / "db"), "--model", str(tiny_model_config),
                                   "--device", device, "--gpu-decode", "off", "--json"])
    assert off.exit_code == 0, off.output


def test_decode_threads_default_to_every_usable_core_only_when_the_gpu_decodes(monkeypatch):
    import indexer.pipeline.workers
    from indexer.pipeline.embed import default_workers

    os_module = indexer.pipeline.workers.os
    monkeypatch.setattr(os_module, "cpu_count", lambda: 128)
    monkeypatch.setattr(os_module, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_workers(device_decodes=True) == 16  # the CPUs this process may use
    assert default_workers(device_decodes=False) == 8
    monkeypatch.delattr(os_module, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os_module, "cpu_count", lambda: None)
    assert default_workers(device_decodes=False) == 1


def test_with_faiss_gpu_the_saved_index_is_cloned_and_searched_with_its_tuning(tmp_path, monkeypatch):
    """faiss-gpu is not installed here: a stand-in with its API (the "GPU" clone is a CPU copy)
    checks what gpu_index and FaissGpuIndex do with it: the saved IVF index is cloned to the asked
    GPU, searched with its tuned nprobe, filtered queries stay on the CPU copy, and the hits are
    those of the CPU path. What faiss-gpu itself does on a GPU is not measured here."""
    import faiss

    from conftest import clustered_vectors
    from indexer.store.library import Library
    from indexer.store.records import ModelInfo, NewItem, single_vector
    from retrieval.query.search import Filters, rank

    vectors = clustered_vectors(3000, 32, clusters=24, spread=0.4, seed=3)
    rows = [NewItem(path=f"/p/{'a' if n % 2 else 'b'}{n}.jpg", size=1, mtime=1.0, content_hash=str(n), width=1,
                    height=1, format="JPEG", vectors=single_vector(vector)) for n, vector in enumerate(vectors)]
    clones = []

    def index_cpu_to_gpu(resources, gpu, index):
        clones.append((gpu, faiss.clone_index(index)))
        return clones[-1][1]

    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", index_cpu_to_gpu, raising=False)
    monkeypatch.setattr(faiss, "GpuParameterSpace", faiss.ParameterSpace, raising=False)
    queries = clustered_vectors(64, 32, clusters=24, spread=0.4, seed=4)
    with Library(tmp_path / "db") as library:
        library.db.bind_model(ModelInfo("m", "w", 32, "f"))
        library.items.write_batch(rows, library.runs.start("index", ["/p"]))
        library.set_index_type("IVF32,Flat")
        library.update_vectors(base_generation=library.generation, rebuild=True)
        on_cpu = rank(library, queries, top=10)
        on_gpu = rank(library, queries, top=10, device="cuda:1")
        assert len(clones) == 1 and clones[0][0] == 1
        tuned = library.vectors_for_search().tuning.nprobe
        assert faiss.extract_index_ivf(clones[0][1]).nprobe == tuned < 32
        assert [[hit.path for hit in hits] for hits in on_gpu] == [[hit.path for hit in hits] for hits in on_cpu]
        only_a = Filters(path_glob="/p/a*")
        filtered = rank(library, queries, top=10, filters=only_a, device="cuda")
        assert [[hit.path for hit in hits] for hits in filtered] == \
               [[hit.path for hit in hits] for hits in rank(library, queries, top=10, filters=only_a)]
        assert all(hit.path.startswith("/p/a") for hits in filtered for hit in hits)


def test_a_result_given_up_on_is_never_handed_over(tmp_path, tiny_model, monkeypatch):
    """An abandoned job that finishes late must not count as a JPEG waiting for the GPU (the backlog
    would stay 'full' and send every big JPEG to the CPU for the rest of the run)."""
    from indexer.pipeline.embed import _failed, _timed_out, prepare_file

    files = write_files(tmp_path / "photos", 2)[:2]
    release = threading.Event()
    hang_reads(monkeypatch, {files[0].path}, release)
    handed = []
    readers, _, _, _ = image_setup(tiny_model, True)
    pool = WorkerThreads(1, prepare_file, on_error=_failed, on_timeout=_timed_out,
                         on_result=lambda result: handed.append(result.file.path) or result)
    try:
        jobs = [pool.submit(file.path, (file, {}, readers, lambda: False)) for file in files]
        assert "longer than 0.2 s" in pool.result(jobs[0], 0.2).error
        assert pool.result(jobs[1], 5).decoded.deferred  # the fresh thread took the next file
        release.set()
        assert jobs[0].finished.acquire(timeout=5)  # the abandoned read finished after all
    finally:
        release.set()
        pool.close()
    assert handed == [files[1].path]


@pytest.mark.parametrize("flag, expected", [([], 4.0), (["--assist-megapixels", "6.5"], 6.5),
                                            (["--assist-megapixels", "0"], None)])
def test_assist_megapixels_flag_reaches_the_pipeline(tmp_path, tiny_model_config, monkeypatch, flag, expected):
    from typer.testing import CliRunner

    import indexer.pipeline.sync
    import retrieval.indexing
    from cli.app import app

    seen = []

    def index_folders(library, media, config, **callbacks):
        seen.append(media.readers[0].options.assist_megapixels)
        return indexer.pipeline.sync.IndexReport()

    monkeypatch.setattr(retrieval.indexing, "index_folders", index_folders)
    pics = tmp_path / "pics"
    pics.mkdir()
    result = CliRunner().invoke(app, ["index", str(pics), "--db", str(tmp_path / "db"), "--model", str(tiny_model_config),
                                      "--json", *flag])
    assert result.exit_code == 0, result.output
    assert seen == [expected]
