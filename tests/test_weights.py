"""Weight sources: the shipped ImageNet blocks 1-3, Keras .h5 files, MatConvNet .mat files."""

import h5py
import numpy as np
import pytest
import scipy.io

from conftest import LITE_H5
from styleflow.errors import StyleflowError
from styleflow.model.network import CONV_LAYERS, KERAS_INPUT, build_extractor
from styleflow.model.weights import load_h5, load_mat, random_weights, resolve_weights


def test_lite_holds_genuine_imagenet_weights():
    weights = resolve_weights("lite")
    assert weights.lite
    assert set(weights.layers) == set(CONV_LAYERS[:8])
    # The genuine VGG ImageNet conv1_1 bias starts 0.7301776, 0.06493629 (Simonyan & Zisserman).
    np.testing.assert_allclose(weights.layers["block1_conv1"][1][:2], [0.7301776, 0.06493629],
                               rtol=1e-6)
    model = build_extractor(weights.layers, ["block3_conv1"])
    kernel, bias = model.get_layer("block1_conv1").get_weights()
    assert bias[0] == pytest.approx(0.7301776, rel=1e-6)
    with h5py.File(LITE_H5) as f:
        np.testing.assert_array_equal(kernel, f["block1_conv1/block1_conv1/kernel:0"][()])


def test_missing_layer_is_named():
    weights = resolve_weights(str(LITE_H5))
    weights.require(["block3_conv4"])  # all present
    with pytest.raises(StyleflowError, match="block4_conv1"):
        weights.require(["block1_conv1", "block4_conv2"])


def legacy_h5(path, layers):
    """A Keras legacy-layout weights file (as Keras 2 wrote them) holding `layers`."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in layers]
        for name, (kernel, bias) in layers.items():
            g = f.create_group(name)
            g.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            g.create_dataset(f"{name}/kernel:0", data=kernel)
            g.create_dataset(f"{name}/bias:0", data=bias)
    return path


def test_wrong_shapes_are_reported(tmp_path):
    layers = dict(random_weights(0, ["block1_conv2"]).layers)
    layers["block1_conv2"] = (np.zeros((3, 3, 64, 32), np.float32), np.zeros(32, np.float32))
    weights = load_h5(legacy_h5(tmp_path / "bad.h5", layers))
    with pytest.raises(StyleflowError, match="block1_conv2.*kernel"):
        weights.require(["block1_conv2"])


def test_keras3_weights_file_round_trip(tmp_path):
    source = random_weights(7, ["block2_conv1"]).layers
    model = build_extractor(source, ["block2_conv1"])
    path = tmp_path / "vgg.weights.h5"
    model.save_weights(path)
    loaded = load_h5(path).layers
    for name in CONV_LAYERS[:3]:
        np.testing.assert_array_equal(loaded[name][0], source[name][0])


@pytest.mark.parametrize("name", ["w.h5", "w.mat", "w.bin"])
def test_not_a_weights_file(tmp_path, name):
    bogus = tmp_path / name
    bogus.write_text("hello")
    with pytest.raises(StyleflowError, match="not a readable"):
        resolve_weights(str(bogus))


def matconvnet_file(path, keras_layers, mean_rgb):
    """A .mat file in imagenet-vgg-verydeep-19.mat's layout built from Keras-layout weights:
    RGB input (the first kernel's input channels reversed), kernels stored width-first."""
    entries = []
    names = {v: k for k, v in {f"conv{b}_{c}": f"block{b}_conv{c}"
                                for b in range(1, 6) for c in range(1, 5)}.items()}
    for i, (name, (kernel, bias)) in enumerate(keras_layers.items()):
        if i == 0:
            kernel = kernel[:, :, ::-1, :]
        cell = np.empty((1, 2), dtype=object)
        cell[0, 0] = np.transpose(kernel, (1, 0, 2, 3))
        cell[0, 1] = bias.reshape(-1, 1)
        entries.append({"name": names[name], "type": "conv", "weights": cell})
        entries.append({"name": f"relu{name[5]}_{name[-1]}", "type": "relu",
                        "weights": np.empty((0, 0))})
    layers = np.empty((1, len(entries)), dtype=object)
    for i, entry in enumerate(entries):
        layers[0, i] = entry
    average = np.broadcast_to(np.asarray(mean_rgb, np.float64), (224, 224, 3)).copy()
    scipy.io.savemat(path, {"layers": layers, "normalization": {"averageImage": average}})
    return path


def test_matconvnet_gives_the_same_features_as_keras(tmp_path):
    keras_weights = random_weights(11, ["block2_conv1"])
    mat = load_mat(matconvnet_file(tmp_path / "vgg.mat", keras_weights.layers,
                                   KERAS_INPUT.mean_rgb))
    assert not mat.input_spec.bgr
    np.testing.assert_allclose(mat.input_spec.mean_rgb, KERAS_INPUT.mean_rgb, rtol=1e-6)
    picture = np.random.default_rng(0).integers(0, 256, (20, 24, 3)).astype(np.uint8)
    outputs = ["block1_conv2", "block2_conv1"]
    from_keras = build_extractor(keras_weights.layers, outputs)(KERAS_INPUT.preprocess(picture))
    from_mat = build_extractor(mat.layers, outputs)(mat.input_spec.preprocess(picture))
    for name in outputs:
        np.testing.assert_allclose(from_mat[name].numpy(), from_keras[name].numpy(),
                                   rtol=1e-4, atol=1e-3)


def test_truncated_mat_file(tmp_path):
    path = matconvnet_file(tmp_path / "vgg.mat", random_weights(0, ["block1_conv2"]).layers,
                           (1, 2, 3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StyleflowError, match="vgg.mat"):
        resolve_weights(str(path))
