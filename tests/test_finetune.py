"""Fine-tuning: it learns, checkpoints round-trip, interrupted runs resume, metrics are right; finetune/eval CLI."""
import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.app import app
from conftest import MINILM_CONFIG, TINY_CONFIG, write_image
from retrieval.finetune.errors import ResumeMismatchError, TrainingError
from retrieval.finetune.evaluate import evaluate_model, match_ranks, retrieval_metrics
from retrieval.finetune.loop import TrainConfig, _train_step, arrange_batches, finetune, warmup_cosine
from retrieval.finetune.pairs import index_pairs, read_pairs
from retrieval.finetune.trainable import TextSide, TrainableModel
from retrieval.models.checkpoint import save_model_folder
from retrieval.models.encoders import load_model
from retrieval.models.registry import describe_model, resolve_model

runner = CliRunner()

# TINY_CONFIG shrunk further, for tests of the loop's mechanics rather than of learning.
MICRO_CONFIG = {
    **TINY_CONFIG,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
# A convolutional image tower (open_clip's ModifiedResNet, as in the bundled model): trained channels-last.
RESNET_CONFIG = {
    **MICRO_CONFIG,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
}


class Stop(Exception):
    """Raised from the progress callback to simulate an interruption."""


@pytest.fixture(scope="module")
def micro_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("micro") / "micro.json"
    path.write_text(json.dumps(MICRO_CONFIG))
    return path


@pytest.fixture(scope="module")
def resnet_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resnet") / "resnet.json"
    path.write_text(json.dumps(RESNET_CONFIG))
    return path


@pytest.fixture(scope="module")
def minilm_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("minilm") / "minilm.json"
    path.write_text(json.dumps(MINILM_CONFIG))
    return path


def quick_config(pairs: Path, out: Path, base: Path, **changes) -> TrainConfig:
    """A few steps of a tiny model with a frozen text tower: seconds on a CPU."""
    settings = dict(pairs=pairs, out=out, base=str(base), val_fraction=0.0, epochs=4, batch_size=16, lr=2e-3,
                    warmup=0.1, lock_text=True, augment=False, seed=0, device="cpu", workers=1)
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def trained(shape_pairs, tiny_model_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "model"
    events = []
    result = finetune(quick_config(shape_pairs, out, tiny_model_config), events.append)
    return result, out, events


def test_finetuning_raises_r1_on_the_pairs(trained):
    result, out, events = trained
    assert result.after.text_to_image.r1 > result.before.text_to_image.r1 + 0.15
    assert result.after.image_to_text.r1 > result.before.image_to_text.r1
    assert result.steps == 8 and len(result.history) == 4 and 1 <= result.best_epoch <= 4
    assert result.eval_on == "training pairs" and result.pairs_per_second > 0
    kinds = [event.kind for event in events]
    assert kinds[0] == "decode" and "plan" in kinds and kinds[-1] == "save"
    assert [event.step for event in events if event.kind == "step"] == list(range(1, 9))


def test_model_folder_records_the_run_and_reloads_with_the_same_metrics(trained, shape_pairs):
    result, out, _ = trained
    manifest = json.loads((out / "mmsearch_model.json").read_text())
    record = manifest["training"]
    assert record["pairs_sha256"] == read_pairs(shape_pairs).sha256
    assert record["after"] == result.after.to_dict() and record["before"] == result.before.to_dict()
    assert record["settings"]["lr"] == 2e-3 and record["settings"]["lock_text"] is True
    assert manifest["logit_scale"] > 1 and manifest["tokenizer"]["context_length"] == 32
    assert not (out / ".resume").exists()
    metrics, skipped = evaluate_model(load_model(str(out), device="cpu"), read_pairs(shape_pairs).pairs)
    assert skipped == [] and metrics.to_dict() == result.after.to_dict()


def test_cpu_bf16_training_validates_in_fp32_like_eval(shape_pairs, micro_config, tmp_path):
    result = finetune(quick_config(shape_pairs, tmp_path / "bf16", micro_config, epochs=1, precision="bf16"))
    manifest = json.loads((tmp_path / "bf16" / "mmsearch_model.json").read_text())
    assert manifest["training"]["settings"]["precision"] == "bf16"
    metrics, _ = evaluate_model(load_model(str(tmp_path / "bf16"), device="cpu"), read_pairs(shape_pairs).pairs)
    assert metrics.to_dict() == result.after.to_dict()
    with pytest.raises(TrainingError, match="precision"):
        finetune(quick_config(shape_pairs, tmp_path / "x", micro_config, precision="fp8"))


def test_running_a_finished_fine_tune_again_does_nothing(trained, shape_pairs, tiny_model_config):
    result, out, _ = trained
    again = finetune(quick_config(shape_pairs, out, tiny_model_config), lambda event: pytest.fail(event.kind))
    assert again.already_done and again.after == result.after
    with pytest.raises(TrainingError, match="already holds a model"):
        finetune(quick_config(shape_pairs, out, tiny_model_config, lr=1e-3))


def _rotated_captions(shape_pairs: Path, folder: Path) -> Path:
    """The shape pairs with every caption moved to the next image: training on it unlearns the right ones."""
    rows = shape_pairs.read_text(encoding="utf-8").splitlines()[1:]
    images = [str(shape_pairs.parent / row.split(",", 1)[0]) for row in rows]
    captions = [row.split(",", 1)[1] for row in rows]
    wrong = folder / "wrong.csv"
    wrong.write_text("image,caption\n" + "".join(f"{image},{caption}\n" for image, caption in
                                                 zip(images, captions[1:] + captions[:1])), encoding="utf-8")
    return wrong


def test_a_fine_tune_that_only_hurts_keeps_the_starting_model_and_says_so(trained, shape_pairs, tmp_path):
    _, base, _ = trained  # already fine-tuned on the shape pairs: a good starting model for them
    wrong = _rotated_captions(shape_pairs, tmp_path)
    out = tmp_path / "worse"
    result = finetune(quick_config(wrong, out, base, val_pairs=shape_pairs, epochs=2, lr=5e-3))
    assert all(epoch.mean_recall < result.before.mean_recall - 0.1 for epoch in result.history)
    assert result.kept_base and result.best_epoch == 0 and result.after == result.before
    record = json.loads((out / "mmsearch_model.json").read_text())["training"]
    assert record["kept"] == "base" and record["best_epoch"] == 0 and record["after"] == record["before"]
    from safetensors.torch import load_file

    left, right = load_file(str(base / "image.safetensors")), load_file(str(out / "image.safetensors"))
    assert left.keys() == right.keys() and all(torch.equal(left[key], right[key]) for key in left)
    metrics, _ = evaluate_model(load_model(str(out), device="cpu"), read_pairs(shape_pairs).pairs)
    assert metrics.to_dict() == result.before.to_dict()

    cli = runner.invoke(app, ["finetune", str(wrong), "--out", str(tmp_path / "cli"), "--base", str(base),
                              "--val", str(shape_pairs), "--epochs", "1", "--batch-size", "16", "--lr", "5e-3",
                              "--lock-text", "--warmup", "0.1", "--device", "cpu"])
    assert cli.exit_code == 0, cli.output
    assert "No epoch beat the starting model" in cli.stderr and "use it with --model" not in cli.stderr
    assert "kept: starting model" in cli.stdout


def test_duplicate_rows_are_left_out_with_one_warning(shape_pairs, micro_config, tmp_path):
    rows = shape_pairs.read_text(encoding="utf-8").splitlines()[1:]
    absolute = [f"{shape_pairs.parent / row.split(',', 1)[0]},{row.split(',', 1)[1]}" for row in rows]
    pairs = tmp_path / "dup.csv"
    pairs.write_text("image,caption\n" + "\n".join(absolute + absolute[:30]) + "\n", encoding="utf-8")
    events = []
    result = finetune(quick_config(pairs, tmp_path / "m", micro_config, epochs=1), events.append)
    warnings = [event.message for event in events if event.kind == "warning"]
    assert len(warnings) == 1 and "30 rows repeat" in warnings[0] and "line 34 repeats line 2" in warnings[0]
    assert "and 27 more" in warnings[0]
    assert result.train_pairs == 32 and len(result.duplicates) == 30
    assert json.loads((tmp_path / "m" / "mmsearch_model.json").read_text())["training"]["duplicate_rows"] == 30

    cli = runner.invoke(app, ["finetune", str(pairs), "--out", str(tmp_path / "cli"), "--base", str(micro_config),
                              "--epochs", "1", "--batch-size", "16", "--lock-text", "--val-fraction", "0",
                              "--device", "cpu"])
    assert cli.exit_code == 0, cli.output
    assert "warning: dup.csv: 30 rows repeat" in cli.stderr and "30 duplicate rows left out" in cli.stderr
    cli = runner.invoke(app, ["eval", str(pairs), "--model", str(micro_config), "--json", "--device", "cpu"])
    assert cli.exit_code == 0 and json.loads(cli.stdout)["n"] == 32 and "warning: dup.csv: 30 rows" in cli.stderr


def test_checkpoint_round_trip_gives_identical_embeddings(tmp_path, tiny_model_config, resnet_config, minilm_config):
    captions = ["a red circle", "a blue square", "ein grünes Dreieck"]
    for config, weights in ((tiny_model_config, "full"), (resnet_config, "full"), (minilm_config, "delta")):
        card = describe_model(resolve_model(str(config)))
        model = TrainableModel(card, lock_text=True)
        assert model.channels_last == (config == resnet_config)
        torch.nn.init.normal_(model.text.proj.weight if weights == "delta" else model.text.text_projection)
        size = card.preprocess.image_size
        pixels = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32))
        model.eval_mode()
        with torch.no_grad():
            image_before = model.image_features(pixels).numpy()
        text_before = TextSide(model, captions, cache=False).embed(captions)
        image_state, text_state, text_weights = model.export_states()
        assert text_weights == weights
        if weights == "delta":
            assert set(text_state) == {"proj.weight"}
        folder = save_model_folder(tmp_path / config.stem, model_cfg=card.model_cfg, preprocess=card.preprocess,
                                   image_state=image_state, text_state=text_state, text_weights=text_weights)
        loaded = load_model(str(folder), device="cpu")
        np.testing.assert_allclose(loaded.image.embed_pixels(pixels.numpy()), image_before, atol=1e-5)
        np.testing.assert_allclose(loaded.text.embed_texts(captions), text_before, atol=1e-5)


@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_cached_text_trunk_gives_the_same_loss(which, tiny_model_config, minilm_config):
    config = tiny_model_config if which == "tiny" else minilm_config
    model = TrainableModel(describe_model(resolve_model(str(config))), lock_text=True)
    model.train_mode()
    captions = ["a red circle", "a much longer caption about a blue square", "x", "a pink cross"]
    cached, uncached = TextSide(model, captions, cache=True), TextSide(model, captions, cache=False)
    assert cached.uses_cache and not uncached.uses_cache
    size = model.card.preprocess.image_size
    image = model.image_features(torch.from_numpy(np.random.default_rng(1).normal(size=(4, 3, size, size)).astype(np.float32)))
    ids = np.asarray([3, 1, 0, 2])
    loss_cached = model.loss(image, cached.features(ids))
    loss_uncached = model.loss(image, uncached.features(ids))
    assert float(loss_cached.detach()) == pytest.approx(float(loss_uncached.detach()), abs=1e-5)
    if which == "minilm":  # the head (projection) still trains through the cache
        head_grad = torch.autograd.grad(loss_cached, model.text.proj.weight)[0]
        assert head_grad.abs().sum() > 0


def test_resume_continues_from_the_saved_step_and_matches_an_uninterrupted_run(shape_pairs, micro_config,
                                                                                tmp_path):
    settings = dict(epochs=2, batch_size=8, checkpoint_every=2)
    whole = finetune(quick_config(shape_pairs, tmp_path / "whole", micro_config, **settings))

    def stop_at_step_3(event):
        if event.kind == "step" and event.step == 3:
            raise Stop()

    out = tmp_path / "interrupted"
    with pytest.raises(Stop):
        finetune(quick_config(shape_pairs, out, micro_config, **settings), stop_at_step_3)
    assert (out / ".resume" / "state.pt").is_file() and not (out / "mmsearch_model.json").exists()

    with pytest.raises(ResumeMismatchError, match="lr"):
        finetune(quick_config(shape_pairs, out, micro_config, **settings, lr=1e-3))

    events = []
    resumed = finetune(quick_config(shape_pairs, out, micro_config, **settings), events.append)
    resume_event = next(event for event in events if event.kind == "resume")
    assert resume_event.step == 2
    assert [event.step for event in events if event.kind == "step"] == list(range(3, 9))
    assert not any(event.kind == "epoch" and event.epoch == 0 for event in events)  # no second "before"
    assert resumed.resumed_from_step == 2 and resumed.steps == whole.steps == 8
    assert resumed.after == whole.after and resumed.before == whole.before
    from safetensors.torch import load_file

    for name in ("image.safetensors", "text.safetensors"):
        left, right = load_file(str(tmp_path / "whole" / name)), load_file(str(out / name))
        assert all(torch.equal(left[key], right[key]) for key in left)


def test_restart_discards_a_resume_state(shape_pairs, micro_config, tmp_path):
    out = tmp_path / "m"

    def stop_at_step_1(event):
        if event.kind == "step" and event.step == 1:
            raise Stop()

    with pytest.raises(Stop):
        finetune(quick_config(shape_pairs, out, micro_config, epochs=1, checkpoint_every=1, batch_size=8),
                 stop_at_step_1)
    events = []
    finetune(quick_config(shape_pairs, out, micro_config, epochs=1, batch_size=8, lr=1e-3, restart=True),
             events.append)
    assert not any(event.kind == "resume" for event in events)
    assert [event.step for event in events if event.kind == "step"] == [1, 2, 3, 4]


def test_out_folder_with_other_files_is_refused(shape_pairs, micro_config, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="other files"):
        finetune(quick_config(shape_pairs, tmp_path / "busy", micro_config))
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_locking_both_towers_is_refused_and_unlocked_groups_train(tiny_model_config):
    card = describe_model(resolve_model(str(tiny_model_config)))
    with pytest.raises(TrainingError, match="nothing left to train"):
        TrainableModel(card, lock_image=True, lock_text=True)
    model = TrainableModel(card, unlocked_image_groups=1, lock_text=True)
    trainable = {name for name, p in model.visual.named_parameters() if p.requires_grad}
    assert trainable == {"proj"}
    model = TrainableModel(card, unlocked_text_layers=1)
    assert model.text_locked and not model.trunk_frozen
    assert not model.text.token_embedding.weight.requires_grad and model.text.text_projection.requires_grad


def test_accumulated_batches_give_the_gradient_of_one_big_batch(shape_pairs, micro_config):
    from retrieval.finetune.images import EVAL, PairImages
    from retrieval.finetune.loop import _Split

    card = describe_model(resolve_model(str(micro_config)))
    pairs = read_pairs(shape_pairs).pairs[:16]
    index = index_pairs(pairs)
    store = PairImages(index.images, card.preprocess, mode=EVAL)
    store.load()
    updates = []
    for micro in ([np.arange(16)], [np.arange(8), np.arange(8, 16)]):
        model = TrainableModel(card, lock_text=True)
        split = _Split(list(pairs), index, store, np.arange(len(index.images)))
        split.text = TextSide(model, index.captions)
        model.eval_mode()  # no dropout: both runs see the same function
        optimizer = torch.optim.SGD(model.parameter_groups(0.0), lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        before = model.visual.proj.detach().clone()
        scale_before = model.loss.log_scale.detach().clone()
        _train_step(model, split, micro, None, optimizer, scheduler, scaler, contextlib.nullcontext, grad_clip=0.0)
        updates.append((model.visual.proj.detach() - before, model.loss.log_scale.detach() - scale_before))
    torch.testing.assert_close(updates[0][0], updates[1][0], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(updates[0][1], updates[1][1], atol=1e-6, rtol=1e-4)


def test_arrange_batches_avoids_repeats_and_is_complete():
    image_ids = np.asarray([0, 0, 1, 1, 2, 2, 3, 3, 4, 5])
    caption_ids = np.arange(10)
    order = np.random.default_rng(0).permutation(10)
    batches = arrange_batches(order, image_ids, caption_ids, 4)
    assert [len(batch) for batch in batches] == [4, 4]
    for batch in batches:
        assert len(set(image_ids[batch])) == 4
    assert len(set(np.concatenate(batches))) == 8
    same = np.zeros(6, dtype=np.int64)  # every pair shares one image: repeats are unavoidable
    assert [len(b) for b in arrange_batches(range(6), same, np.arange(6), 3)] == [3, 3]


def test_warmup_then_cosine():
    values = [warmup_cosine(step, 100, 10) for step in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0) and values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:])) and values[-1] < 0.01


def test_metrics_against_brute_force_and_shared_items():
    rng = np.random.default_rng(0)
    queries, candidates = rng.normal(size=(50, 8)), rng.normal(size=(40, 8))
    matches = [np.asarray(sorted(rng.choice(40, size=rng.integers(1, 4), replace=False))) for _ in range(50)]
    ranks = match_ranks(queries, candidates, matches, block=7)
    for query, right, rank in zip(queries, matches, ranks):
        scores = candidates @ query
        best = scores[right].max()
        wrong = np.setdiff1d(np.arange(40), right)
        assert rank == 1 + int((scores[wrong] >= best).sum())


def test_metrics_count_a_hit_when_any_matching_item_is_retrieved(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"{i}.png", seed=i)
    pairs = tmp_path / "p.csv"
    pairs.write_text("image,caption\n0.png,dog\n1.png,dog\n2.png,cat\n2.png,kitten\n", encoding="utf-8")
    index = index_pairs(read_pairs(pairs).pairs)  # images 0,1,2; captions dog, cat, kitten
    image_vectors = np.asarray([[1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32)
    text_vectors = np.asarray([[0.8, 0.6], [0, 1], [0, 1]], dtype=np.float32)
    metrics = retrieval_metrics(image_vectors, text_vectors, index)
    assert metrics.n == 4 and metrics.captions == 3 and metrics.images == 3
    assert metrics.text_to_image.r1 == 1.0 and metrics.text_to_image.mean_rank == 1.0
    # image 2 ties "cat" and "kitten", both right; image 0's best caption "dog" ranks first too
    assert metrics.image_to_text.r1 == 1.0
    constant = retrieval_metrics(np.ones((3, 2), np.float32), np.ones((3, 2), np.float32), index)
    assert constant.text_to_image.r1 == 0.0  # ties count against the model


# ---------------------------------------------------------------- CLI


def test_cli_finetune_then_eval(shape_pairs, micro_config, tmp_path):
    out = tmp_path / "model"
    result = runner.invoke(app, ["finetune", str(shape_pairs), "--out", str(out), "--base", str(micro_config),
                                 "--epochs", "1", "--batch-size", "16", "--lr", "2e-3", "--lock-text",
                                 "--val-fraction", "0.25", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["out"] == str(out) and record["eval_on"] == "held-out split" and record["val_pairs_used"] == 8
    assert "before training" in result.stderr and "epoch 1/1" in result.stderr

    result = runner.invoke(app, ["eval", str(shape_pairs), "--model", str(out), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 32 and metrics["skipped"] == 0
    for direction in ("text_to_image", "image_to_text"):
        assert set(metrics[direction]) == {"r1", "r5", "r10", "mean_rank"}
        assert 0 <= metrics[direction]["r1"] <= metrics[direction]["r5"] <= metrics[direction]["r10"] <= 1
        assert 1 <= metrics[direction]["mean_rank"] <= 32

    result = runner.invoke(app, ["eval", str(shape_pairs), "--model", str(out), "--device", "cpu"])
    assert result.exit_code == 0 and "text->image" in result.stdout and "R@10" in result.stdout


def test_cli_eval_reports_skipped_rows_on_stderr(shape_pairs, tiny_model_config, tmp_path):
    pairs = tmp_path / "p.csv"
    lines = shape_pairs.read_text().splitlines()
    folder = shape_pairs.parent
    rows = [f"{folder / line.split(',')[0]},{line.split(',', 1)[1]}" for line in lines[1:6]]
    pairs.write_text("image,caption\n" + "\n".join(rows) + "\nmissing.png,a ghost\n", encoding="utf-8")
    result = runner.invoke(app, ["eval", str(pairs), "--model", str(tiny_model_config), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 5 and json.loads(result.stdout)["skipped"] == 1
    assert "skipping line 7: image not found" in result.stderr


def test_cli_errors_go_to_stderr_with_exit_1(tmp_path, tiny_model_config):
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    for command in (["eval", str(bad), "--model", str(tiny_model_config)],
                    ["finetune", str(bad), "--out", str(tmp_path / "o"), "--base", str(tiny_model_config)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1
        assert "Error:" in result.stderr and "no image column" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("command", ["finetune", "eval", "classify"])
def test_help_has_an_example(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Example" in result.stdout


# ---------------------------------------------------------------- defaults and WiSE-FT


def test_auto_settings_follow_the_base(tmp_path, tiny_model_config, minilm_config):
    from retrieval.finetune import defaults
    from retrieval.models.registry import ModelCard, ModelSpec

    bundled = describe_model(resolve_model("bundled"))
    config = TrainConfig(pairs=tmp_path / "p.csv", out=tmp_path / "o")
    resolved, profile = defaults.resolve(config, bundled, 1800)
    assert profile == "small" and resolved.lr == 1e-3 and not resolved.augment and resolved.lock_text
    assert resolved.epochs == 22 and defaults.resolve(config, bundled, 100_000)[0].epochs == defaults.MIN_EPOCHS
    assert defaults.resolve(config, bundled, 50)[0].epochs == defaults.MAX_EPOCHS
    given = TrainConfig(pairs=tmp_path / "p.csv", out=tmp_path / "o", lr=3e-4, epochs=2, augment=False,
                        lock_text=False)
    assert defaults.resolve(given, bundled, 1800)[0] == given  # what the user set stays
    pretrained = ModelCard(spec=ModelSpec(name="ViT-B-32:x", source="open_clip", arch="ViT-B-32", pretrained="x"),
                           model_cfg={"embed_dim": 512, "vision_cfg": {}, "text_cfg": {}},
                           preprocess=bundled.preprocess, fingerprint="0")
    resolved, profile = defaults.resolve(config, pretrained, 1800)
    assert profile == "pretrained" and resolved.lr == 1e-5 and resolved.epochs == 5
    assert not resolved.augment and not resolved.lock_text
    for path, locked in ((tiny_model_config, False), (minilm_config, True)):
        resolved, profile = defaults.resolve(config, describe_model(resolve_model(str(path))), 1800)
        assert profile == "scratch" and resolved.lock_text is locked and resolved.lr == 1e-3 and resolved.augment
    assert defaults.profile_after("scratch") == "small" and defaults.profile_after("pretrained") == "pretrained"


def test_a_fine_tune_records_the_profile_its_own_fine_tunes_use(trained):
    _, out, _ = trained  # trained from a random config: a small model trained by mmsearch now
    from retrieval.finetune import defaults

    card = describe_model(resolve_model(str(out)))
    assert card.manifest["finetune_profile"] == "small" and defaults.profile_of(card) == "small"
    assert card.manifest["training"]["profile"] == "scratch"


def test_interpolated_weights_and_the_mix_kept():
    from retrieval.finetune.evaluate import DirectionMetrics, RetrievalMetrics
    from retrieval.finetune.interpolate import choose_mix, interpolate_states

    start = {"visual": {"w": torch.zeros(3), "n": torch.tensor(1)}, "loss": {"log_scale": torch.tensor(1.0)}}
    tuned = {"visual": {"w": torch.full((3,), 4.0), "n": torch.tensor(9)}, "loss": {"log_scale": torch.tensor(3.0)}}
    mixed = interpolate_states(start, tuned, 0.25)
    assert torch.equal(mixed["visual"]["w"], torch.full((3,), 1.0)) and int(mixed["visual"]["n"]) == 9
    assert float(mixed["loss"]["log_scale"]) == 1.5

    def metrics(value: float) -> RetrievalMetrics:
        direction = DirectionMetrics(value, value, value, 1.0, 10)
        return RetrievalMetrics(10, 10, 10, direction, direction)

    peak = {1.0: 0.5, 0.75: 0.7, 0.5: 0.6}  # validation peaks between start and tuned
    mix = choose_mix(start, tuned, metrics(peak[1.0]), lambda state: metrics(peak[float(state["visual"]["w"][0]) / 4]))
    assert mix.alpha == 0.75 and [alpha for alpha, _ in mix.tried] == [1.0, 0.75, 0.5]
    assert torch.equal(mix.state["visual"]["w"], torch.full((3,), 3.0)) and mix.metrics.text_to_image.r1 == 0.7
    flat = choose_mix(start, tuned, metrics(0.5), lambda state: metrics(0.5))
    assert flat.alpha == 1.0 and flat.state is tuned  # a tie keeps the trained weights


def test_the_trained_run_tried_mixes_and_saved_what_it_kept(trained):
    result, out, events = trained
    assert [alpha for alpha, _ in result.mix_tried] == [1.0, 0.75, 0.5]
    kept = dict(result.mix_tried)[result.mix_alpha]
    assert kept == result.after and any(event.kind == "mix" for event in events)
    record = json.loads((out / "mmsearch_model.json").read_text())["training"]
    assert record["mix_alpha"] == result.mix_alpha and len(record["mix_tried"]) == 3
