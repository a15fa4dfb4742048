"""Towers built without their random start (retrieval.models.skip_init): the same tower once the
weights are loaded, the start really not drawn, and only on the thread that asked."""
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from retrieval.models.skip_init import weights_to_follow
from retrieval.models.towers import IMAGE, TEXT, build_tower


@pytest.fixture(params=["tiny ViT + text transformer", "the bundled architecture: ModifiedResNet + MiniLM"])
def card(request, tiny_model):
    if request.param.startswith("tiny"):
        return tiny_model.card
    from retrieval.models.registry import describe_model, resolve_model

    return describe_model(resolve_model(str(Path(__file__).parents[1] / "retrieval/models/configs/mmsearch-emoji-minilm.json")))


def test_a_tower_built_for_its_weights_is_the_same_tower_once_they_are_loaded(card):
    size = card.model_cfg["vision_cfg"]["image_size"]
    inputs = {IMAGE: torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)),
              TEXT: torch.randint(1, 1000, (2, card.model_cfg["text_cfg"]["context_length"]),
                                  generator=torch.Generator().manual_seed(2))}
    for which in (IMAGE, TEXT):
        seeded = build_tower(card, which).eval()
        following = build_tower(card, which, weights_follow=True).eval()
        weights = [name for name, value in seeded.named_parameters() if value.dim() >= 2]
        start = dict(following.named_parameters())
        # the random start was not drawn: the seeded build's weights are not there before the load
        assert sum(not torch.equal(start[name], dict(seeded.named_parameters())[name]) for name in weights) >= len(weights) // 2
        following.load_state_dict(seeded.state_dict(), strict=True)
        with torch.no_grad():  # the same outputs: non-persistent buffers (the text tower's mask) intact
            assert torch.equal(seeded(inputs[which]), following(inputs[which])), which


def test_the_random_start_is_skipped_on_the_asking_thread_only():
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def asking():
        with weights_to_follow():
            kept = torch.zeros(1000)
            nn.init.normal_(kept)
            seen["inside"] = float(kept.abs().sum())
            seen["deterministic"] = float(nn.init.ones_(torch.zeros(10)).sum())
            inside.set()
            release.wait(10)
        after = torch.zeros(1000)
        nn.init.normal_(after)
        seen["after"] = float(after.std())

    thread = threading.Thread(target=asking)
    thread.start()
    assert inside.wait(10)
    other = torch.zeros(1000)
    nn.init.normal_(other)  # another thread, while the first is inside the block
    layer = nn.Linear(64, 64)
    release.set()
    thread.join()
    assert seen["inside"] == 0.0 and seen["deterministic"] == 10.0
    assert float(other.std()) > 0.5 and float(layer.weight.detach().abs().sum()) > 0 and seen["after"] > 0.5


def test_blocks_nest_and_an_error_inside_restores_the_random_start():
    def drawn() -> bool:
        tensor = torch.zeros(100)
        nn.init.uniform_(tensor)
        return bool(tensor.abs().sum() > 0)

    with weights_to_follow():
        with pytest.raises(RuntimeError), weights_to_follow():
            raise RuntimeError("inside")
        assert not drawn()  # the outer block still skips
    assert drawn()
