"""torch.compile(fullgraph=True) of the generator, both discriminators and the step's networks: no graph break, and
batches with other object and triple counts cause no recompilation (O and T are marked dynamic, `mark_dynamic`).
Checked on the CPU with cheap backends: 'aot_eager' traces the forward and backward graphs as inductor would, without
the minutes of C++ code generation; 'eager' only captures (enough for inference)."""
import copy
import pytest, torch
from sg2im_nb.train.config import make_config
from sg2im_nb.train.step import build_nets, build_optims, train_step
from sg2im_nb.train.engineering import mark_dynamic, compile_nets
from sg2im_nb.reference.bench import bench_vocab, random_batch

VOCAB, CFG = bench_vocab(), make_config('tiny', amp='none')


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def batches(n_images=4):
    """Batches of the same number of images with other object (O) and triple (T) counts. (PyTorch picks its CPU
    convolution path by batch size: the mask net, whose batch is O, takes another path below 16 objects, so a batch
    of fewer than 16 objects after bigger ones compiles once more. Training batches hold far more.)"""
    return [random_batch(CFG, VOCAB, n_images, objects_per_image=k, seed=k) for k in (3, 7, 5)]


def test_training_step_with_compiled_networks():
    "Each network compiles whole (forward and backward); the step's losses equal the eager step's; no recompilation."
    torch.manual_seed(0)
    eager, _ = build_nets(CFG, VOCAB)
    nets = copy.deepcopy(eager)
    compiled = compile_nets(nets, backend='aot_eager')
    opt_c, opt_e = build_optims(nets, 1e-3), build_optims(eager, 1e-3)
    first, *others = batches()
    torch.manual_seed(1); got = train_step(compiled, opt_c, mark_dynamic(first), CFG)
    torch.manual_seed(1); want = train_step(eager, opt_e, first, CFG)
    assert list(got) == list(want)
    for k in want: assert abs(got[k] - want[k]) <= 1e-4 * max(1, abs(want[k])), (k, got[k], want[k])
    with torch._dynamo.config.patch(error_on_recompile=True):
        for b in others:
            losses = train_step(compiled, opt_c, b, CFG)
            assert all(v == v for v in losses.values())


def test_generation_compiles_whole():
    model = build_nets(CFG, VOCAB)[0].model.eval()
    gen = torch.compile(model, fullgraph=True, backend='eager')
    first, *others = batches()
    with torch.no_grad():
        def run(b): return gen(b.objs, b.triples, b.obj_to_img, num_images=b.num_images)
        want = model(first.objs, first.triples, first.obj_to_img, num_images=4)
        torch.testing.assert_close(run(mark_dynamic(first)).boxes_pred, want.boxes_pred)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for b in others: assert run(b).imgs.shape == (4, 3, 32, 32)


def test_graph_breaks_are_gone():
    "dynamo.explain: one graph per network, no break (the layout's N, the crops' counts and the syncs are gone)."
    nets, _ = build_nets(CFG, VOCAB)
    b = batches()[0]
    fake = b.imgs.clone().requires_grad_()
    for fn, args in ((lambda: nets.model(b.objs, b.triples, b.obj_to_img, boxes_gt=b.boxes, masks_gt=b.masks,
                                         num_images=b.num_images, predict_masks=False), ()),
                     (nets.discriminators['d_obj'], (fake, b.objs, b.boxes, b.obj_to_img)), (nets.discriminators['d_img'], (fake,))):
        e = torch._dynamo.explain(fn)(*args)
        assert (e.graph_count, e.graph_break_count) == (1, 0), e.break_reasons


def test_static_step_compiles_and_equals_eager():
    """--static_shapes 1 with --compile: the padded step's networks compile whole and give the eager padded step's
    losses; more batches of the bucket (other object and triple counts, padded alike) compile nothing more."""
    from sg2im_nb.data.common import pad_batch
    from sg2im_nb.train.static import static_nets, static_train_step
    torch.manual_seed(0)
    eager, _ = build_nets(CFG, VOCAB)
    nets = copy.deepcopy(eager)
    compiled = compile_nets(static_nets(nets), backend='aot_eager')
    s_eager, opt_c, opt_e = static_nets(eager), build_optims(nets, 1e-3), build_optims(eager, 1e-3)
    def padded(k, seed): return pad_batch(random_batch(CFG, VOCAB, 4, objects_per_image=k, seed=seed), 32, 48)
    torch.manual_seed(0); got = static_train_step(compiled, opt_c, padded(3, 0), CFG)
    torch.manual_seed(0); want = static_train_step(s_eager, opt_e, padded(3, 0), CFG)
    assert list(got) == list(want)
    for name in want: assert abs(got[name] - want[name]) <= 1e-4 * max(1, abs(want[name])), (name, got[name], want[name])
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i, k in enumerate((5, 4), 1):
            torch.manual_seed(i); got = static_train_step(compiled, opt_c, padded(k, i), CFG)
            torch.manual_seed(i); want = static_train_step(s_eager, opt_e, padded(k, i), CFG)
            for name in want: assert abs(got[name] - want[name]) <= 1e-4 * max(1, abs(want[name])), (i, name)
