"""Our torchvision-free preprocessing must match open_clip's eval transform."""
import numpy as np
import pytest
from PIL import Image

from indexer.media.preprocess import PreprocessConfig, flatten_alpha, to_model_input


@pytest.mark.parametrize("size", [(97, 64), (64, 140), (300, 200), (64, 64)])
@pytest.mark.parametrize("mode", ["shortest", "squash"])
def test_matches_open_clip_transform(size, mode):
    import open_clip

    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    cfg = PreprocessConfig(image_size=48, resize_mode=mode)
    reference = open_clip.image_transform(48, is_train=False, mean=cfg.mean, std=cfg.std, resize_mode=mode)(image)
    ours = to_model_input(image, cfg)
    assert ours.shape == (3, 48, 48)
    np.testing.assert_allclose(ours, reference.numpy(), atol=1e-5)


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert flatten_alpha(image).getpixel((5, 5)) == (255, 255, 255)


def test_longest_mode_pads_to_square():
    image = Image.new("RGB", (100, 50), (255, 255, 255))
    cfg = PreprocessConfig(image_size=32, resize_mode="longest", mean=(0, 0, 0), std=(1, 1, 1))
    pixels = to_model_input(image, cfg)
    assert pixels.shape == (3, 32, 32)
    assert pixels[:, 0, :].max() == 0.0  # padding row
    assert pixels[:, 16, :].min() == pytest.approx(1.0)  # image row
