"""Numba's tile transforms (model.winograd_kernels) give XLA's bits on any map size, hand out
no memory a tensor still holds, run on TensorFlow's thread count, and give way to XLA's where
the graph is itself compiled by XLA."""

import numpy as np
import pytest
import tensorflow as tf

from styleflow.model import winograd, winograd_kernels
from styleflow.model.frozen_conv import make_layer
from styleflow.model.host_buffers import HostBuffers, size_class

KINDS = ("input", "masked", "output", "bias")


def _arguments(kind, rng, h, w, channels):
    rows, cols = -(-h // 4), -(-w // 4)
    x = rng.normal(size=(1, h, w, channels)).astype(np.float32)
    if kind == "input":
        return (tf.constant(x),)
    if kind == "masked":
        mask = rng.normal(size=x.shape).astype(np.float32)
        mask[0, ::3, ::2, ::5] = 0.0  # zeros and NaN are closed too
        mask[0, 1, 1, :3] = np.nan
        return tf.constant(x), tf.constant(mask)
    products = tf.constant(rng.normal(size=(36, rows * cols, channels)).astype(np.float32))
    size = (tf.constant(h), tf.constant(w))
    if kind == "output":
        return (products, *size)
    return (products, *size, tf.constant(rng.normal(size=channels).astype(np.float32)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("h, w, channels", [(16, 16, 64), (19, 26, 128), (37, 50, 16),
                                            (21, 17, 512), (5, 3, 8), (4, 9, 3)])
def test_numba_transforms_give_xlas_bits(kind, h, w, channels):
    rng = np.random.default_rng(h * 100 + w)
    args = _arguments(kind, rng, h, w, channels)
    want = winograd._compiled(kind, tf.float32)(*args).numpy()
    got = tf.function(winograd_kernels.transform(kind))(*args).numpy()
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.int32), want.view(np.int32))
    assert np.abs(want).max() > 0


def test_a_layer_uses_numba_by_default_and_xla_as_a_lever_with_the_same_bits():
    rng = np.random.default_rng(3)
    kernel = (rng.normal(size=(3, 3, 64, 128)) / 24).astype(np.float32)
    bias = (0.1 * rng.normal(size=128)).astype(np.float32)
    x = tf.constant(rng.normal(size=(1, 23, 30, 64)).astype(np.float32))
    results = []
    for transforms in ("auto", "xla"):
        layer = make_layer(kernel, bias, "w", winograd=True, transforms=transforms)

        @tf.function
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                total = tf.reduce_sum(y * y)
            return y, tape.gradient(total, x)

        graph = run.get_concrete_function(x).graph.as_graph_def()
        nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
        # py_func ops other than the kernel check's (`winograd.same_buffer`)
        calls = {node.attr["token"].s.decode() for node in nodes if node.op == "PyFuncStateless"}
        assert winograd._same_buffer_token() in calls  # the kernel check compares buffers,
        assert "Equal" not in {node.op for node in nodes}  # not values (a pass over both)
        calls.discard(winograd._same_buffer_token())
        assert bool(calls) == (transforms == "auto"), transforms
        results.append([t.numpy() for t in run(x)])
    for got, want in zip(*results):
        assert np.array_equal(got.view(np.int32), want.view(np.int32))


def test_inside_an_xla_compiled_function_the_transforms_are_xlas():
    rng = np.random.default_rng(4)
    kernel = (rng.normal(size=(3, 3, 64, 128)) / 24).astype(np.float32)
    layer = make_layer(kernel, np.zeros(128, np.float32), "w", winograd=True)
    x = tf.constant(rng.normal(size=(1, 20, 24, 64)).astype(np.float32))
    compiled = tf.function(lambda x: tf.reduce_sum(layer(x)), jit_compile=True)
    plain = tf.function(lambda x: tf.reduce_sum(layer(x)))
    assert float(compiled(x)) == pytest.approx(float(plain(x)), rel=1e-5)


def test_a_result_still_held_is_not_handed_out_again():
    """Each call's result comes from the pool; one a tensor (or a view of it) still holds
    keeps its values while later calls run."""
    rng = np.random.default_rng(5)
    output = tf.function(winograd_kernels.transform("bias"))
    args = _arguments("bias", rng, 21, 18, 32)
    first = output(*args)
    kept = first.numpy().copy()
    # TensorFlow took the pool's memory without a copy (else the pool would not matter)
    address = np.asarray(first).ctypes.data
    assert any(owner.ctypes.data <= address < owner.ctypes.data + owner.size
               for owner in winograd_kernels.BUFFERS._owners)
    sliced = first[0, 2:]
    for _ in range(4):  # same shape: the pool's size class matches
        later = output(*_arguments("bias", rng, 21, 18, 32))
        assert not np.array_equal(later.numpy(), kept)
    assert np.array_equal(first.numpy(), kept)
    assert np.array_equal(sliced.numpy(), kept[0, 2:])


def test_the_pool_reuses_free_arrays_and_hands_out_none_in_use():
    pool = HostBuffers(keep_bytes=3000)
    a = pool.take((10, 20))
    assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.dtype == np.float32
    b = pool.take((10, 20))
    assert not np.shares_memory(a, b)
    address = a.ctypes.data
    view = a[None, 1:]  # a view keeps its array in use
    del a
    c = pool.take((10, 20))
    assert c.ctypes.data != address
    del view
    d = pool.take((10, 19))  # a nearby size shares the size class
    assert d.ctypes.data == address
    e = pool.take((2, 3))  # the smallest free array large enough: a new small one, not b's
    assert e.nbytes == 24 and len(pool._owners) == 4


def test_the_pool_keeps_what_recent_requests_had_in_use_and_drops_the_rest():
    pool = HostBuffers(keep_bytes=1000, window=4)
    held = [pool.take((1000,)) for _ in range(5)]  # 5 x 4 KB in use at once
    del held
    pool.take((10,))
    total, free = pool.held_bytes()
    assert free >= 5 * 4000  # kept for the next evaluation of the same size
    for _ in range(9):  # two windows of small requests: the old peak is forgotten
        pool.take((10,))
    total, free = pool.held_bytes()
    assert total <= 1000 + 2 * (size_class(10) * 4 + 64)
    pool.clear()
    assert pool.held_bytes()[1] == 0


def test_size_classes_round_up_by_at_most_an_eighth():
    for n in (1, 7, 8, 9, 100, 1023, 1025, 123457, 2**30 + 1):
        assert n <= size_class(n) <= max(n + 1, n * 9 // 8 + 1)
    assert size_class(1000) == size_class(1024)


def test_numba_runs_on_tensorflows_thread_count(monkeypatch):
    import numba

    seen = []
    original = winograd_kernels._input_kernel

    def recording(*args):
        seen.append(numba.get_num_threads())
        return original(*args)

    monkeypatch.setattr(winograd_kernels, "_input_kernel", recording)
    monkeypatch.setattr(winograd_kernels.machine, "intra_op_threads", lambda: 1)
    winograd_kernels.input_tiles(np.ones((1, 9, 9, 4), np.float32))
    assert seen == [1]


def test_without_numbas_kernels_the_transforms_are_xlas(monkeypatch):
    monkeypatch.setattr(winograd, "numba_available", lambda: False)
    assert winograd.transform("input", tf.float32) is winograd._compiled("input", tf.float32)
    assert not winograd.numba_suits(20, 20, 64, 128)
    from styleflow.plan import memory

    assert memory.transform_pool_bytes((300, 400), ["block5_conv2", "block1_conv1"]) == 0
    monkeypatch.undo()
    monkeypatch.setattr(memory.machine, "transposed_convolutions", lambda precision: True)
    assert memory.transform_pool_bytes((300, 400), ["block5_conv2", "block1_conv1"]) > 0


def test_mismatched_shapes_are_refused_before_the_kernels_index():
    with pytest.raises(ValueError, match="do not tile"):
        winograd_kernels.output_map(np.zeros((36, 5, 8), np.float32), 20, 20)
    with pytest.raises(ValueError, match="bias"):
        winograd_kernels.output_map(np.zeros((36, 25, 8), np.float32), 20, 20,
                                    np.zeros(7, np.float32))
    with pytest.raises(ValueError, match="mask"):
        winograd_kernels.input_tiles(np.zeros((1, 9, 9, 4), np.float32),
                                     np.zeros((1, 9, 8, 4), np.float32))
    assert winograd_kernels.output_map(np.ones((36, 25, 8), np.float32), 20, 20).shape == (
        1, 20, 20, 8)


def _pooling_case(rng, h, w, channels, ties):
    """Products and bias whose map relu(Aᵀ m A + bias) has, with `ties`, every window's
    values equal (positive, or zero where the bias is negative): TensorFlow's pooling then
    sends the gradient to the first of them."""
    rows, cols = -(-h // 4), -(-w // 4)
    products = rng.normal(size=(36, rows * cols, channels)).astype(np.float32)
    bias = (0.5 * rng.normal(size=channels)).astype(np.float32)
    if ties:
        products[:] = 0
    return products, bias


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("h, w, channels", [(300, 400, 64), (37, 50, 512), (9, 7, 8),
                                            (10, 13, 16), (4, 4, 3), (5, 6, 64), (2, 3, 4)])
def test_pooling_in_the_transforms_gives_tensorflows_pooling_and_masked_tiles(
        h, w, channels, ties):
    """pooled_map is max pooling of output_map's relu(. + bias), and routed_tiles builds from
    the pooled map's gradient the tiles that the masked transform builds from max pooling's
    gradient (TensorFlow's, in a traced function as the network runs it) and the map: the
    same bits, including where windows tie and where a last odd row or column is dropped."""
    rng = np.random.default_rng(h * 1000 + w + ties)
    products, bias = _pooling_case(rng, h, w, channels, ties)
    y = tf.constant(winograd_kernels.output_map(products, h, w, bias).copy())

    @tf.function
    def pool_and_back(y, dpool):
        with tf.GradientTape() as tape:
            tape.watch(y)
            pooled = tf.nn.max_pool2d(y, 2, 2, "VALID")
        return pooled, tape.gradient(pooled, y, output_gradients=dpool)

    dpool = rng.normal(size=(1, h // 2, w // 2, channels)).astype(np.float32)
    want_pooled, dy = pool_and_back(y, tf.constant(dpool))
    want_tiles = winograd._compiled("masked", tf.float32)(dy, y).numpy()

    pooled, route = (t.numpy() for t in tf.function(winograd_kernels.transform("pooled"))(
        tf.constant(products), tf.constant(h), tf.constant(w), tf.constant(bias)))
    assert pooled.shape == want_pooled.shape and route.dtype == np.uint8
    assert np.array_equal(pooled.view(np.int32), want_pooled.numpy().view(np.int32))
    tiles = tf.function(winograd_kernels.transform("routed"))(
        tf.constant(dpool), tf.constant(route), tf.constant(h), tf.constant(w)).numpy()
    assert np.array_equal(tiles.view(np.int32), want_tiles.view(np.int32))
    if h > 3 and w > 3:
        assert np.abs(want_tiles).max() > 0
        # both kinds of window met: some pass their gradient on, some (not above zero) none
        assert 0 < np.count_nonzero(route == winograd_kernels.NO_ROUTE) < route.size
        if ties:  # only the first place of a window of equal values
            assert set(np.unique(route)) <= {0, winograd_kernels.NO_ROUTE}


def test_pooling_kernels_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="do not tile"):
        winograd_kernels.pooled_map(np.zeros((36, 5, 8), np.float32), 20, 20,
                                    np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="do not pool"):
        winograd_kernels.routed_tiles(np.zeros((1, 10, 9, 8), np.float32),
                                      np.zeros((10, 10, 8), np.uint8), 20, 20)
