"""The data layer: image I/O, the synthetic local-blur generator, folder readers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from m2ae.errors import UserError
from m2ae.imageio import list_images, read_image, read_image_size, read_mask, write_image
from m2ae.model.data import synthetic
from m2ae.model.data.folders import PAIRED, RELOBLUR, open_pairs
from m2ae.model.data.sources import SHIFTED_NUM_STEPS, evaluation_samples, picture_files
from m2ae.model.data.synthetic import (
    HELDOUT_SOURCES,
    PROCEDURAL_SOURCE,
    SHIFTED_DISPLACEMENT,
    SPLITS,
    TRAIN_SOURCES,
    Sample,
    SyntheticConfig,
    SyntheticDataset,
    heldout_set,
    load_source,
    make_batch,
    make_sample,
)

SMALL = SyntheticConfig(size=(40, 56), num_steps=5, max_displacement=6.0)


def assert_one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> None:
    message = str(exc.value)
    assert str(path) in message
    assert "\n" not in message and "Traceback" not in message


# ---------------------------------------------------------------- image I/O


def test_read_rgb_png_exact_levels(tmp_path, rng):
    levels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(levels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == np.float32 and image.shape == (5, 7, 3)
    np.testing.assert_array_equal(image, levels.astype(np.float32) / 255)


def test_read_gray_8bit_replicated(tmp_path, rng):
    levels = rng.integers(0, 256, (6, 4), dtype=np.uint8)
    Image.fromarray(levels).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (6, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[:, :, c], levels / np.float32(255))


def test_read_gray_16bit_scaled(tmp_path, rng):
    levels = rng.integers(0, 65536, (5, 9), dtype=np.uint16)
    levels[0, 0], levels[0, 1] = 0, 65535
    Image.fromarray(levels).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    assert image.shape == (5, 9, 3)
    np.testing.assert_allclose(image[:, :, 1], levels / 65535.0, atol=1e-6)
    assert image[0, 0, 0] == 0.0 and image[0, 1, 0] == 1.0


def test_read_32bit_int_mode_as_16bit(tmp_path, rng):
    levels = rng.integers(0, 65536, (4, 4)).astype(np.int32)
    Image.fromarray(levels).save(tmp_path / "i.tif")
    np.testing.assert_allclose(read_image(tmp_path / "i.tif")[:, :, 0], levels / 65535.0, atol=1e-6)


def test_read_one_bit(tmp_path, rng):
    bits = rng.random((8, 8)) > 0.5
    Image.fromarray(bits).convert("1").save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png")[:, :, 2], bits.astype(np.float32))


def test_read_rgba_drops_alpha(tmp_path, rng):
    rgba = rng.integers(0, 256, (5, 5, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: values must still come back unchanged
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3] / np.float32(255))


def test_read_palette_expanded(tmp_path):
    palette = [0, 0, 0, 255, 0, 0, 0, 128, 255] + [0] * (256 * 3 - 9)
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    img = Image.new("P", (3, 2))
    img.putpalette(palette)
    img.putdata(indices.ravel().tolist())
    img.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as img:
        assert img.mode == "P"
    expected = np.array(palette[:9], np.float32).reshape(3, 3)[indices] / 255
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), expected)


def test_read_applies_exif_orientation(tmp_path, rng):
    levels = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(levels).save(tmp_path / "o.png", exif=exif)
    image = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(image, np.rot90(levels, -1) / np.float32(255))
    assert read_image_size(tmp_path / "o.png") == (4, 6)  # header only: as stored


def test_read_mask_formats(tmp_path, rng):
    truth = rng.random((6, 7)) > 0.6
    Image.fromarray((truth * 255).astype(np.uint8)).save(tmp_path / "l.png")
    Image.fromarray(truth).convert("1").save(tmp_path / "one.png")
    Image.fromarray((truth * 3).astype(np.uint16)).save(tmp_path / "w16.png")
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[..., 2] = truth * 200  # only one channel set: still blurred
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    for name in ("l.png", "one.png", "w16.png", "rgb.png"):
        mask = read_mask(tmp_path / name)
        assert mask.dtype == bool and mask.shape == (6, 7), name
        np.testing.assert_array_equal(mask, truth, err_msg=name)


def test_write_image_hwc_chw_gray_roundtrip(tmp_path, rng):
    hwc = rng.random((9, 11, 3)).astype(np.float32)
    write_image(tmp_path / "hwc.png", hwc)
    write_image(tmp_path / "chw.png", torch.from_numpy(hwc.transpose(2, 0, 1).copy()))
    write_image(tmp_path / "gray.png", hwc[:, :, 0])
    quantised = np.round(hwc * 255) / 255
    np.testing.assert_array_equal(read_image(tmp_path / "hwc.png"), quantised.astype(np.float32))
    np.testing.assert_array_equal(read_image(tmp_path / "chw.png"), read_image(tmp_path / "hwc.png"))
    with Image.open(tmp_path / "gray.png") as img:
        assert img.mode == "L"
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png")[:, :, 0], quantised[:, :, 0].astype(np.float32))


def test_write_image_rejects_unknown_layout(tmp_path):
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.png", np.zeros((4, 5, 6)))
    assert not any(tmp_path.iterdir())


def test_write_image_clips_and_leaves_no_temp(tmp_path):
    values = np.array([[[-1.0, 0.5, 2.0]]], np.float32)
    write_image(tmp_path / "sub" / "c.png", values)
    with Image.open(tmp_path / "sub" / "c.png") as img:
        assert np.asarray(img).tolist() == [[[0, 128, 255]]]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["c.png"]


def test_list_images_filters_and_sorts(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.tiff", "notes.txt", ".hidden.png", "d.webp", "e.bmp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "dir.png" / "z.png").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.tiff", "d.webp", "e.bmp"]
    deep = list_images(tmp_path, recursive=True)
    assert deep == sorted(deep) and tmp_path / "dir.png" / "z.png" in deep and len(deep) == 6


def test_missing_file_error(tmp_path):
    path = tmp_path / "nope.png"
    for reader in (read_image, read_mask, read_image_size):
        with pytest.raises(UserError) as exc:
            reader(path)
        assert_one_line_naming(exc, path)


def test_non_image_file_error(tmp_path):
    path = tmp_path / "text.png"
    path.write_text("not an image\nat all\n")
    for reader in (read_image, read_mask, read_image_size):
        with pytest.raises(UserError) as exc:
            reader(path)
        assert_one_line_naming(exc, path)
        assert "not a readable image" in str(exc.value)


def test_truncated_image_error(tmp_path, rng):
    path = tmp_path / "cut.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as exc:
        read_image(path)
    assert_one_line_naming(exc, path)
    assert "truncated" in str(exc.value)


def test_folder_given_as_image_and_list_of_missing_folder(tmp_path):
    with pytest.raises(UserError) as exc:
        read_image(tmp_path)
    assert_one_line_naming(exc, tmp_path)
    with pytest.raises(UserError) as exc:
        list_images(tmp_path / "missing")
    assert_one_line_naming(exc, tmp_path / "missing")


# ---------------------------------------------------------------- synthetic generator


@pytest.fixture(scope="module")
def small_samples():
    return [make_sample(SMALL, seed) for seed in range(12)]


def test_sample_shapes_dtypes_ranges(small_samples):
    height, width = SMALL.hw
    for s in small_samples:
        assert s.blurred.shape == s.sharp.shape == (3, height, width)
        assert s.mask.shape == (1, height, width)
        assert s.trajectory.shape == (2 * SMALL.num_steps, height, width)
        for array in (s.blurred, s.sharp, s.mask, s.trajectory):
            assert array.dtype == np.float32 and np.isfinite(array).all()
        for array in (s.blurred, s.sharp):
            assert array.min() >= 0.0 and array.max() <= 1.0
            np.testing.assert_array_equal(np.round(array * 255) / 255, array)  # 8-bit levels
        assert set(np.unique(s.mask)) <= {0.0, 1.0}


def test_mask_is_exactly_the_changed_pixels(small_samples):
    for s in small_samples:
        changed = np.any(s.blurred != s.sharp, axis=0)
        np.testing.assert_array_equal(s.mask[0].astype(bool), changed)
        np.testing.assert_array_equal(s.blurred[:, ~changed], s.sharp[:, ~changed])


def test_every_sample_has_blur_but_not_everywhere(small_samples):
    ratios = [s.mask.mean() for s in small_samples]
    assert min(ratios) > 0.0
    assert max(ratios) < 0.9


def test_same_seed_identical_different_seeds_differ():
    a, b = make_sample(SMALL, 7), make_sample(SMALL, 7)
    for field in ("blurred", "sharp", "mask", "trajectory"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.sources == b.sources
    c = make_sample(SMALL, 8)
    assert not np.array_equal(a.blurred, c.blurred)
    assert not np.array_equal(a.mask, c.mask)


def test_trajectory_bounded_and_zero_at_mid_exposure(small_samples):
    mid = SMALL.num_steps // 2
    for s in small_samples:
        steps = s.trajectory.reshape(SMALL.num_steps, 2, *SMALL.hw)
        assert np.abs(steps[mid]).max() == 0.0
        assert np.linalg.norm(steps, axis=1).max() <= SMALL.max_displacement + 1e-4
        assert np.abs(steps).max() > 0.0


def test_trajectory_zero_where_no_object():
    # One hard-edged object: its moving outline is in the mask, so every pixel it
    # covers lies inside the mask's bounding box; everywhere else nothing moves.
    config = dataclasses.replace(SMALL, max_objects=1, soft_edge_prob=0.0)
    for seed in range(12):
        s = make_sample(config, seed)
        moving = np.any(s.trajectory != 0, axis=0)
        rows, cols = np.nonzero(s.mask[0])
        ys, xs = np.nonzero(moving)
        assert len(ys) > 0
        assert rows.min() - 1 <= ys.min() and ys.max() <= rows.max() + 1, seed
        assert cols.min() - 1 <= xs.min() and xs.max() <= cols.max() + 1, seed


def reblur(sharp: np.ndarray, trajectory: np.ndarray) -> np.ndarray:
    """mean_t sharp(p + traj_t(p)) with grid_sample: the documented convention."""
    steps = trajectory.shape[0] // 2
    _, height, width = sharp.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                            torch.arange(width, dtype=torch.float32), indexing="ij")
    image = torch.from_numpy(sharp)[None].expand(steps, -1, -1, -1)
    flow = torch.from_numpy(trajectory).view(steps, 2, height, width)
    gx = (xs + flow[:, 0]) * 2 / (width - 1) - 1
    gy = (ys + flow[:, 1]) * 2 / (height - 1) - 1
    warped = torch.nn.functional.grid_sample(image, torch.stack([gx, gy], dim=-1),
                                             mode="bilinear", padding_mode="border", align_corners=True)
    return warped.mean(0).numpy()


def assert_trajectory_explains_the_blur(config: SyntheticConfig, seeds: range) -> None:
    """Reblurring the sharp image along the trajectory beats the sharp image and the flipped sign.

    Warping cannot explain disocclusions (background revealed behind an object), so
    the reblur only wins by a margin.
    """
    ratios = []
    for seed in seeds:
        s = make_sample(config, seed)
        inside = s.mask[0] > 0
        err_identity = np.abs(s.sharp - s.blurred)[:, inside].mean()
        err_reblur = np.abs(reblur(s.sharp, s.trajectory) - s.blurred)[:, inside].mean()
        err_flipped = np.abs(reblur(s.sharp, -s.trajectory) - s.blurred)[:, inside].mean()
        assert err_reblur < err_identity and err_reblur < err_flipped, seed
        ratios.append(err_reblur / err_identity)
    assert np.mean(ratios) < 0.8


def test_trajectory_sign_convention_explains_the_blur():
    assert_trajectory_explains_the_blur(dataclasses.replace(SMALL, size=64, max_displacement=8.0), range(8))


def test_size_and_steps_follow_config():
    config = SyntheticConfig(size=(33, 47), num_steps=4, max_objects=1, max_displacement=3.0)
    s = make_sample(config, 0)
    assert s.blurred.shape == (3, 33, 47) and s.trajectory.shape == (8, 33, 47)
    assert s.mask.any()


def test_splits_disjoint_by_name_and_pixels():
    assert not set(TRAIN_SOURCES) & set(HELDOUT_SOURCES)
    assert "cat" not in TRAIN_SOURCES  # skimage's cat is the held-out chelsea
    heldout = [load_source(name) for name in HELDOUT_SOURCES]
    for name in TRAIN_SOURCES:
        image = load_source(name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert not image.flags.writeable
        for other in heldout:
            assert image.shape != other.shape or not np.array_equal(image, other), name


def test_samples_draw_only_from_their_split():
    for split in ("train", "heldout"):
        config = dataclasses.replace(SMALL, split=split, natural_object_prob=1.0)
        used = set()
        for seed in range(20):
            used.update(make_sample(config, seed).sources)
        assert used <= set(SPLITS[split])
        assert len(used) >= 2
    train = make_sample(dataclasses.replace(SMALL, split="train"), 3)
    held = make_sample(dataclasses.replace(SMALL, split="heldout"), 3)
    assert not np.array_equal(train.sharp, held.sharp)


def test_make_batch_and_dataset_agree_with_make_sample():
    batch = make_batch(SMALL, [5, 6])
    assert batch["blurred"].shape == (2, 3, *SMALL.hw)
    assert batch["mask"].shape == (2, 1, *SMALL.hw)
    assert batch["trajectory"].shape == (2, 2 * SMALL.num_steps, *SMALL.hw)
    dataset = SyntheticDataset(SMALL, length=3, base_seed=5)
    assert len(dataset) == 3
    item = dataset[1]
    np.testing.assert_array_equal(item["sharp"].numpy(), make_sample(SMALL, 6).sharp)
    for key in ("blurred", "sharp", "mask", "trajectory"):
        assert torch.equal(batch[key][1], item[key]), key
    loaded = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert torch.equal(loaded["blurred"], batch["blurred"])
    with pytest.raises(IndexError):
        dataset[3]


def test_heldout_set_is_fixed_and_heldout():
    first, second = heldout_set(num_images=2, size=48), heldout_set(num_images=2, size=48)
    assert first.config.split == "heldout" and len(first) == 2
    assert torch.equal(first[1]["blurred"], second[1]["blurred"])
    assert first[0]["blurred"].shape == (3, 48, 48)


@pytest.mark.parametrize(
    "overrides, option",
    [({"num_steps": 1}, "num_steps"), ({"max_displacement": 0.5}, "max_displacement"),
     ({"split": "test"}, "split"), ({"size": 4}, "size"), ({"max_objects": 0}, "max_objects"),
     ({"generator": "other"}, "generator"), ({"still_objects": -1}, "still_objects"),
     ({"defocus": 1.5}, "defocus"), ({"defocus": float("nan")}, "defocus"),
     ({"procedural": -0.1}, "procedural"), ({"procedural": float("nan")}, "procedural")],
)
def test_bad_config_names_option(overrides, option):
    with pytest.raises(UserError, match=option):
        SyntheticConfig(**overrides)


def _assert_same_motion_and_exact_pair(plain: Sample, changed: Sample) -> None:
    """``changed`` (a data option on) has ``plain``'s moving objects on the same paths, a
    mask exactly where its frames differ, and both frames on 8-bit levels."""
    np.testing.assert_array_equal(changed.trajectory, plain.trajectory)
    np.testing.assert_array_equal(changed.mask[0].astype(bool), np.any(changed.blurred != changed.sharp, axis=0))
    for frame in (changed.blurred, changed.sharp):
        np.testing.assert_array_equal(np.round(frame * 255) / 255, frame)


def _still_pixels(sample: Sample) -> np.ndarray:
    """[H, W] bool: pixels outside ``sample``'s mask that no moving object reaches."""
    return (np.abs(sample.trajectory).max(axis=0) == 0) & ~sample.mask[0].astype(bool)


def test_still_objects_are_sharp_distractors_that_leave_the_moving_scene_alone():
    still = dataclasses.replace(SMALL, still_objects=3)
    pasted = 0
    for seed in range(6):
        plain, s = make_sample(SMALL, seed), make_sample(still, seed)
        _assert_same_motion_and_exact_pair(plain, s)
        # Still objects are sharp: where they changed the scene, away from anything that
        # moves, both frames show them alike.
        changed = np.any(s.sharp != plain.sharp, axis=0) & _still_pixels(plain)
        assert not s.mask[0][changed].any()
        pasted += int(changed.any())
    assert pasted >= 2


def test_recolour_tints_grey_backgrounds_and_keeps_the_pair_exact():
    recoloured = dataclasses.replace(SMALL, recolour=True)
    for seed in range(4):
        plain, s = make_sample(SMALL, seed), make_sample(recoloured, seed)
        _assert_same_motion_and_exact_pair(plain, s)
        assert not np.array_equal(s.sharp, plain.sharp)
    # Seed 0's background is gravel, a grey picture: its still pixels are grey no more.
    plain, s = make_sample(SMALL, 0), make_sample(recoloured, 0)
    still = _still_pixels(plain)
    assert np.ptp(plain.sharp[:, still], axis=0).max() == 0.0
    assert np.ptp(s.sharp[:, still], axis=0).mean() > 0.05


def test_defocus_softens_the_still_scene_and_keeps_the_pair_exact():
    defocused = dataclasses.replace(SMALL, defocus=1.0)
    softer = 0
    for seed in range(4):
        plain, s = make_sample(SMALL, seed), make_sample(defocused, seed)
        _assert_same_motion_and_exact_pair(plain, s)
        # Away from every moving object the scene is the plain one, out of focus: less
        # local contrast, the same mean.
        still = _still_pixels(plain) & ~s.mask[0].astype(bool)
        inner = np.zeros_like(still)
        inner[8:-8, 8:-8] = True
        still &= inner

        def contrast(image: np.ndarray) -> float:
            return float(np.abs(np.diff(image, axis=-1))[:, still[:, 1:] & still[:, :-1]].mean())

        assert abs(float(s.sharp[:, still].mean() - plain.sharp[:, still].mean())) < 0.02
        softer += int(contrast(s.sharp) < 0.9 * contrast(plain.sharp))
    assert softer >= 3


def test_defocus_zero_draws_nothing():
    assert np.array_equal(make_sample(dataclasses.replace(SMALL, defocus=0.0), 3).blurred, make_sample(SMALL, 3).blurred)


def test_procedural_backgrounds_replace_the_picture_and_keep_the_pair_exact():
    procedural = dataclasses.replace(SMALL, procedural=1.0)
    for seed in range(4):
        plain, s = make_sample(SMALL, seed), make_sample(procedural, seed)
        _assert_same_motion_and_exact_pair(plain, s)
        assert s.sources[0] == PROCEDURAL_SOURCE and PROCEDURAL_SOURCE not in plain.sources
        still = _still_pixels(plain)
        assert not np.array_equal(s.sharp[:, still], plain.sharp[:, still])


def test_dead_leaves_are_colourful_occluding_shapes_at_many_scales():
    rng = np.random.default_rng(5)
    scenes = [synthetic._dead_leaves(rng, 96, 80) for _ in range(6)]
    for scene in scenes:
        assert scene.shape == (96, 80, 3) and scene.dtype == np.float32
        np.testing.assert_array_equal(np.round(scene * 255) / 255, scene)
        # Inside a leaf neighbours differ by noise and texture; edges between leaves are
        # steps far above that, and common.
        steps = np.abs(np.diff(scene, axis=1)).max(axis=2)
        assert np.median(steps) < 0.03
        assert (steps > 0.1).mean() > 0.05
    assert not np.array_equal(scenes[0], scenes[1])
    assert np.mean([np.ptp(s, axis=2).mean() for s in scenes]) > 0.05  # colour, not just grey


def test_leaf_radii_follow_the_scale_invariant_law():
    radii = synthetic._leaf_radii(np.random.default_rng(0), 200_000, 2.0, 64.0)
    assert radii.min() >= 2.0 and radii.max() <= 64.0
    # Under density ~ r^-3 every octave covers the same area: sum of r^2 per octave.
    octaves = [np.sum(radii[(radii >= lo) & (radii < 2 * lo)] ** 2) for lo in (2.0, 4.0, 8.0, 16.0, 32.0)]
    assert max(octaves) / min(octaves) < 1.1


def _picture_folder(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (height, width) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_user_pictures_join_the_training_pictures(tmp_path: Path):
    folder = _picture_folder(tmp_path / "pics", [(64, 80), (30, 200)])
    pictures = picture_files(folder)
    assert pictures == (str(folder / "p0.png"), str(folder / "p1.png"))
    config = dataclasses.replace(SMALL, pictures=pictures)
    used: set[str] = set()
    for seed in range(40):
        s = make_sample(config, seed)
        _assert_same_motion_and_exact_pair(s, make_sample(config, seed))
        used.update(s.sources)
    assert set(pictures) <= used and used & set(TRAIN_SOURCES)
    # A sample whose background is a user picture shows that picture's pixels.
    sample = next(s for s in (make_sample(config, i) for i in range(40)) if s.sources[0] == pictures[0])
    still = _still_pixels(sample)
    assert np.isin(np.round(sample.sharp[:, still] * 255), np.asarray(Image.open(folder / "p0.png"))).mean() > 0.5


def test_user_pictures_are_checked_up_front(tmp_path: Path):
    with pytest.raises(UserError, match="no images"):
        picture_files(_picture_folder(tmp_path / "empty", []))
    with pytest.raises(UserError, match="too small"):
        picture_files(_picture_folder(tmp_path / "tiny", [(64, 64), (8, 64)]))
    with pytest.raises(UserError, match="no such folder"):
        picture_files(tmp_path / "missing")
    with pytest.raises(UserError, match="train split"):
        SyntheticConfig(split="heldout", pictures=(str(tmp_path / "x.png"),))


def test_procedural_zero_draws_nothing():
    assert np.array_equal(make_sample(dataclasses.replace(SMALL, procedural=0.0), 3).blurred, make_sample(SMALL, 3).blurred)


# ---------------------------------------------------------------- the shifted generator

SHIFTED = dataclasses.replace(SMALL, size=64, num_steps=7, generator="shifted")


def test_standard_generator_samples_unchanged():
    # Pinned from the generator as it was before "shifted" existed: the standard one
    # must keep making the same pairs (same draws in the same order).
    pinned = {
        0: (("gravel",), 77, 3.2212, 0.5404),
        1: (("camera",), 66, 3.2881, 0.0785),
        2: (("gravel", "brick"), 130, 2.0956, 0.4815),
        3: (("gravel", "retina", "hubble_deep_field"), 148, 3.1441, 0.4568),
    }
    explicit = dataclasses.replace(SMALL, generator="standard")
    for seed, (sources, masked, motion, mean) in pinned.items():
        s, t = make_sample(SMALL, seed), make_sample(explicit, seed)
        for field in ("blurred", "sharp", "mask", "trajectory"):
            assert np.array_equal(getattr(s, field), getattr(t, field)), field
        assert s.sources == sources, seed
        assert int(s.mask.sum()) == pytest.approx(masked, abs=2), seed
        assert float(np.abs(s.trajectory).max()) == pytest.approx(motion, abs=1e-3), seed
        assert float(s.blurred.mean()) == pytest.approx(mean, abs=1e-3), seed


def test_shifted_samples_keep_the_invariants_and_differ_from_standard():
    for seed in range(8):
        s = make_sample(SHIFTED, seed)
        again = make_sample(SHIFTED, seed)
        assert np.array_equal(s.blurred, again.blurred) and np.array_equal(s.trajectory, again.trajectory)
        assert s.sources and set(s.sources) <= set(TRAIN_SOURCES)
        for array in (s.blurred, s.sharp):
            np.testing.assert_array_equal(np.round(array * 255) / 255, array)  # 8-bit levels
        changed = np.any(s.blurred != s.sharp, axis=0)
        assert changed.any()
        np.testing.assert_array_equal(s.mask[0].astype(bool), changed)
        steps = s.trajectory.reshape(SHIFTED.num_steps, 2, *SHIFTED.hw)
        assert np.abs(steps[SHIFTED.num_steps // 2]).max() == 0.0
        standard = make_sample(dataclasses.replace(SHIFTED, generator="standard"), seed)
        assert not np.array_equal(s.blurred, standard.blurred)


def test_shifted_trajectory_convention_explains_the_blur():
    assert_trajectory_explains_the_blur(SHIFTED, range(6))


def object_path(sample, num_steps: int) -> np.ndarray | None:
    """The positions of a sample's only object, read back from its trajectory (None if
    the object is out of the frame at some step)."""
    steps = sample.trajectory.reshape(num_steps, 2, -1)
    points = []
    for step in steps:
        moved = step[:, np.any(step != 0, axis=0)]
        if moved.shape[1] == 0:
            points.append(np.zeros(2))  # mid-exposure, or not in view
            continue
        values = np.unique(moved, axis=1)
        assert values.shape[1] == 1  # one object: one offset per step
        points.append(values[:, 0])
    if sum(not p.any() for p in points) > 1:
        return None
    return np.array(points)


def test_shifted_motion_length_is_4_to_14_px_whatever_max_displacement():
    config = dataclasses.replace(SHIFTED, max_objects=1, max_displacement=2.0)
    lengths = []
    for seed in range(24):
        points = object_path(make_sample(config, seed), config.num_steps)
        if points is not None:
            lengths.append(np.linalg.norm(points[:, None] - points[None], axis=2).max())
    low, high = SHIFTED_DISPLACEMENT
    assert (low, high) == (4.0, 14.0)
    assert len(lengths) >= 18
    assert min(lengths) >= low - 1e-3 and max(lengths) <= high + 1e-3
    assert min(lengths) < 7.0 and max(lengths) > 11.0  # the whole range, not max_displacement's


def test_shifted_paths_straight_or_strongly_curved():
    def bend(points: np.ndarray) -> float:
        chord = points[-1] - points[0]
        normal = np.array([-chord[1], chord[0]]) / np.linalg.norm(chord)
        return float(np.abs((points - points[0]) @ normal).max() / np.linalg.norm(chord))

    rng = np.random.default_rng(5)
    standard = [bend(synthetic._path(rng, 15, 10.0)) for _ in range(100)]
    shifted = [synthetic._shifted_path(rng, 15, 10.0) for _ in range(100)]
    assert max(standard) <= 0.3 + 1e-6  # the standard bend is at most 0.6, the apex half of it
    bends = [bend(p) for p in shifted]
    assert all(b < 1e-6 or b > 0.35 for b in bends)
    assert sum(b < 1e-6 for b in bends) >= 25 and sum(b > 0.35 for b in bends) >= 25
    for points in shifted:
        extent = np.linalg.norm(points[:, None] - points[None], axis=2).max()
        assert extent == pytest.approx(10.0)
        assert np.abs(points[7]).max() < 1e-9  # mid-exposure
    gaps = [np.linalg.norm(np.diff(p, axis=0), axis=1) for p in shifted]
    uneven = [g.max() / g.min() for g in gaps]
    assert sum(u < 1.05 for u in uneven) >= 15 and sum(u > 2.0 for u in uneven) >= 15


def test_shifted_shapes_are_not_the_standard_ones():
    from scipy import ndimage

    def holed(alpha: np.ndarray) -> bool:
        solid = alpha >= 0.5
        return bool((ndimage.binary_fill_holes(solid) & ~solid).any())

    def thin(alpha: np.ndarray) -> bool:  # long, but nowhere 7 px thick
        solid = alpha >= 0.5
        ys, xs = np.nonzero(solid)
        long = max(np.ptp(ys), np.ptp(xs)) + 1 >= 20
        return long and not ndimage.binary_erosion(solid, np.ones((7, 7))).any()

    rng = np.random.default_rng(123)
    standard = [synthetic._alpha(rng, 48, 48, soft=False) for _ in range(60)]
    shifted = [synthetic._shifted_alpha(rng, 48, 48, soft=bool(i % 2)) for i in range(60)]
    for alpha in shifted:
        assert alpha.max() == 1.0 and alpha.min() == 0.0
        # the soft edge stays inside the box (a cut silhouette would be a hard line)
        assert not (alpha[0].any() or alpha[-1].any() or alpha[:, 0].any() or alpha[:, -1].any())
    assert not any(map(holed, standard))
    assert sum(map(holed, shifted)) >= 6  # rings
    assert sum(map(thin, shifted)) >= 2 * sum(map(thin, standard)) + 10  # bars and strokes


def test_evaluation_samples_synthetic_shifted():
    samples = evaluation_samples("synthetic-shifted", 2, 64)
    assert len(samples) == 2
    assert samples.dataset.config.generator == "shifted" and samples.dataset.config.split == "heldout"
    assert samples.dataset.config.num_steps == SHIFTED_NUM_STEPS
    item = samples[1]
    assert item["blurred"].shape == item["sharp"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)
    np.testing.assert_array_equal(item["mask"][0].astype(bool), np.any(item["blurred"] != item["sharp"], axis=0))
    standard = evaluation_samples("synthetic", 2, 64)[1]
    assert not np.array_equal(item["blurred"], standard["blurred"])
    assert samples.dataset[0]["name"] == f"synthetic_heldout_shifted_{synthetic.HELDOUT_BASE_SEED}"
    with pytest.raises(UserError, match="num-images"):
        evaluation_samples("synthetic-shifted", 0, 64)


def test_heldout_set_shifted_through_overrides():
    dataset = heldout_set(num_images=1, size=48, generator="shifted")
    assert dataset.config.generator == "shifted" and dataset.config.split == "heldout"
    assert not torch.equal(dataset[0]["blurred"], heldout_set(num_images=1, size=48)[0]["blurred"])


# ---------------------------------------------------------------- folders


def write_pair(blur: Path, sharp: Path, mask: Path | None, rng, size=(12, 10)) -> None:
    height, width = size
    write_image(blur, rng.random((height, width, 3)))
    write_image(sharp, rng.random((height, width, 3)))
    if mask is not None:
        write_image(mask, (rng.random((height, width)) > 0.5).astype(np.float32))


def test_reloblur_roundtrip(tmp_path, rng):
    write_pair(tmp_path / "s1" / "00_blur.png", tmp_path / "s1" / "00_sharp.png", tmp_path / "s1" / "00_mask.png", rng)
    write_pair(tmp_path / "s2" / "00_blur.png", tmp_path / "s2" / "00_sharp.png", tmp_path / "s2" / "00_blur_mask.png", rng)
    # partners in sibling folders, found by a unique name anywhere in the tree
    write_pair(tmp_path / "b" / "07_blur.png", tmp_path / "gt" / "07_sharp.png", tmp_path / "m" / "07_mask.png", rng)
    (tmp_path / "readme.png").write_bytes(b"ignored: no role suffix")
    pairs = open_pairs(tmp_path)
    assert pairs.layout == RELOBLUR and len(pairs) == 3
    assert all(files.mask is not None for files in pairs.pairs)
    assert [p.name for p in pairs.pairs] == ["b/07", "s1/00", "s2/00"]
    items = list(pairs)
    for item, files in zip(items, pairs.pairs):
        np.testing.assert_array_equal(item["blurred"].numpy(), read_image(files.blurred).transpose(2, 0, 1))
        np.testing.assert_array_equal(item["sharp"].numpy(), read_image(files.sharp).transpose(2, 0, 1))
        np.testing.assert_array_equal(item["mask"].numpy()[0], read_mask(files.mask).astype(np.float32))
        assert item["blurred"].dtype == torch.float32 and item["mask"].shape == (1, 12, 10)
    assert pairs.pairs[2].mask.name == "00_blur_mask.png"


def test_reloblur_without_masks(tmp_path, rng):
    write_pair(tmp_path / "a_blur.png", tmp_path / "a_sharp.png", None, rng)
    pairs = open_pairs(tmp_path)
    assert pairs.pairs[0].mask is None and pairs[0]["mask"] is None and pairs[0]["name"] == "a"


def test_paired_roundtrip(tmp_path, rng):
    for name in ("x", "y"):
        write_pair(tmp_path / "blur" / f"{name}.png", tmp_path / "sharp" / f"{name}.png",
                   tmp_path / "mask" / f"{name}.png", rng, size=(8, 14))
    pairs = open_pairs(tmp_path)
    assert pairs.layout == PAIRED and len(pairs) == 2
    assert all(files.mask is not None for files in pairs.pairs)
    item = pairs[1]
    assert item["name"] == "y"
    np.testing.assert_array_equal(item["sharp"].numpy(), read_image(tmp_path / "sharp" / "y.png").transpose(2, 0, 1))
    np.testing.assert_array_equal(item["mask"].numpy()[0] > 0, read_mask(tmp_path / "mask" / "y.png"))


def expect_error(root: Path, culprit: Path, fragment: str) -> None:
    with pytest.raises(UserError) as exc:
        open_pairs(root)
    assert_one_line_naming(exc, culprit)
    assert fragment in str(exc.value)


def test_error_blur_without_sharp(tmp_path, rng):
    write_image(tmp_path / "a_blur.png", rng.random((4, 4, 3)))
    expect_error(tmp_path, tmp_path / "a_blur.png", "sharp")


def test_error_sharp_without_blur(tmp_path, rng):
    write_pair(tmp_path / "a_blur.png", tmp_path / "a_sharp.png", None, rng)
    write_image(tmp_path / "b_sharp.png", rng.random((4, 4, 3)))
    expect_error(tmp_path, tmp_path / "b_sharp.png", "without")


def test_error_paired_missing_sharp_and_orphan_sharp(tmp_path, rng):
    write_pair(tmp_path / "blur" / "a.png", tmp_path / "sharp" / "a.png", None, rng)
    write_image(tmp_path / "blur" / "b.png", rng.random((12, 10, 3)))
    expect_error(tmp_path, tmp_path / "blur" / "b.png", "no sharp image")
    (tmp_path / "blur" / "b.png").unlink()
    write_image(tmp_path / "sharp" / "c.png", rng.random((12, 10, 3)))
    expect_error(tmp_path, tmp_path / "sharp" / "c.png", "without a blur image")


@pytest.mark.parametrize("which", ["sharp", "mask"])
def test_error_size_mismatch(tmp_path, rng, which):
    write_pair(tmp_path / "a_blur.png", tmp_path / "a_sharp.png", tmp_path / "a_mask.png", rng)
    culprit = tmp_path / f"a_{which}.png"
    write_image(culprit, rng.random((12, 11, 3)))
    expect_error(tmp_path, culprit, "differs")


def test_error_paired_size_mismatch(tmp_path, rng):
    write_pair(tmp_path / "blur" / "a.png", tmp_path / "sharp" / "a.png", None, rng)
    write_image(tmp_path / "sharp" / "a.png", rng.random((3, 3, 3)))
    expect_error(tmp_path, tmp_path / "sharp" / "a.png", "differs")


def test_error_unreadable_file_in_pairs(tmp_path, rng):
    write_pair(tmp_path / "a_blur.png", tmp_path / "a_sharp.png", None, rng)
    (tmp_path / "a_sharp.png").write_text("this is text")
    expect_error(tmp_path, tmp_path / "a_sharp.png", "not a readable image")


def test_error_truncated_file_when_read(tmp_path, rng):
    write_pair(tmp_path / "a_blur.png", tmp_path / "a_sharp.png", None, rng, size=(64, 64))
    data = (tmp_path / "a_blur.png").read_bytes()
    (tmp_path / "a_blur.png").write_bytes(data[: len(data) // 2])
    pairs = open_pairs(tmp_path)  # the header is intact; decoding finds the damage
    with pytest.raises(UserError) as exc:
        pairs[0]
    assert_one_line_naming(exc, tmp_path / "a_blur.png")


def test_error_masks_all_or_nothing(tmp_path, rng):
    write_pair(tmp_path / "a_blur.png", tmp_path / "a_sharp.png", tmp_path / "a_mask.png", rng)
    write_pair(tmp_path / "b_blur.png", tmp_path / "b_sharp.png", None, rng)
    expect_error(tmp_path, tmp_path / "b_blur.png", "no mask")


def test_error_ambiguous_partner(tmp_path, rng):
    write_image(tmp_path / "b" / "a_blur.png", rng.random((4, 4, 3)))
    write_image(tmp_path / "s1" / "a_sharp.png", rng.random((4, 4, 3)))
    write_image(tmp_path / "s2" / "a_sharp.png", rng.random((4, 4, 3)))
    expect_error(tmp_path, tmp_path / "b" / "a_blur.png", "ambiguous")


def test_error_empty_missing_and_unrecognised_folders(tmp_path, rng):
    expect_error(tmp_path, tmp_path, "no image files")
    expect_error(tmp_path / "missing", tmp_path / "missing", "no such folder")
    write_image(tmp_path / "photo.png", rng.random((4, 4, 3)))
    expect_error(tmp_path, tmp_path, "neither layout")
    expect_error(tmp_path / "photo.png", tmp_path / "photo.png", "is a file")
    write_image(tmp_path / "blur" / "a.png", rng.random((4, 4, 3)))
    expect_error(tmp_path, tmp_path / "sharp", "no such folder")
