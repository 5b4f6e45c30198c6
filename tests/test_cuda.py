"""The GPU suite, for the day a CUDA device is there (skipped without one, so CPU-only CI stays green): golden parity on
CUDA, a bf16 step, the compiled step against eager, the CUDA-graph step, DDP with NCCL on the GPUs present, generation
from sg2im-run-model and the editor, and sg2im-bench --suite."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest, torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')

from sg2im_nb.checkpoint import load_checkpoint, build_model
from sg2im_nb.train.config import make_config
from sg2im_nb.train.step import build_nets, build_optims, train_step
from sg2im_nb.train.engineering import HostSyncs, compile_nets
from sg2im_nb.reference.bench import bench_config, bench_vocab, random_batch, make_step

REPO, DATA, VOCAB = Path(__file__).resolve().parent.parent, Path(__file__).parent / 'data', bench_vocab()


def _close(a, b, atol):
    err = (a.double().cpu() - b.double().cpu()).abs().max().item()
    assert err <= atol, f'max abs error {err:.3g} > {atol}'


@pytest.mark.parametrize('name', ['coco_masks', 'vg_boxes'])
def test_golden_parity_on_cuda(name):
    "The published test vectors, reproduced on the GPU within 1e-4 (TF32 off: float32 parity)."
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = build_model(load_checkpoint(DATA / f'{name}_checkpoint.pt'), device='cuda')
    io = torch.load(DATA / f'{name}_io.pt', weights_only=True)
    inp = {k: v.to('cuda') for k, v in io['inputs'].items() if isinstance(v, torch.Tensor)}
    with torch.no_grad(): out = model(inp['objs'], inp['triples'], inp['obj_to_img'], boxes_gt=inp['boxes'])
    want = io['outputs']['gt_boxes']
    _close(out.imgs, want['imgs'], 1e-4); _close(out.boxes_pred, want['boxes_pred'], 1e-4)


def _tiny(amp='none'):
    cfg = make_config('tiny', device='cuda', amp=amp)
    torch.manual_seed(0)
    nets, _ = build_nets(cfg, VOCAB, 'cuda')
    return cfg, nets, random_batch(cfg, VOCAB, 4, objects_per_image=5, device='cuda')


def test_bf16_step_finite_and_sync_free():
    from sg2im_nb.precision import native_amp
    if not native_amp('cuda')['bf16']: pytest.skip('this GPU has no native bf16 (compute capability below 8.0)')
    cfg, nets, batch = _tiny('bf16')
    optims = build_optims(nets, 1e-3)
    train_step(nets, optims, batch, cfg)
    with HostSyncs() as s: losses = train_step(nets, optims, batch, cfg, as_floats=False)
    assert s.events == []
    assert all(torch.isfinite(v).all() for v in losses.values())


def test_compiled_step_matches_eager():
    cfg, eager, batch = _tiny()
    import copy
    nets = copy.deepcopy(eager)
    compiled = compile_nets(nets)  # inductor
    o_c, o_e = build_optims(nets, 1e-3), build_optims(eager, 1e-3)
    with torch._inductor.config.patch(fallback_random=True):  # the layout noise from eager's generator, as in `want`
        torch.manual_seed(1); got = train_step(compiled, o_c, batch, cfg)
    torch.manual_seed(1); want = train_step(eager, o_e, batch, cfg)
    for k in want: assert abs(got[k] - want[k]) <= 1e-3 * max(1, abs(want[k])), (k, got[k], want[k])


def test_cuda_graph_step_runs_and_trains():
    cfg = bench_config('tiny', 'none', 'cuda')
    batch = random_batch(cfg, VOCAB, 4, device='cuda')
    step = make_step(cfg, VOCAB, batch, cuda_graphs=True)
    before = [p.detach().clone() for p in step.nets.model.parameters()]
    losses = step(); torch.cuda.synchronize()
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, step.nets.model.parameters()))


def test_ddp_nccl_on_the_gpus_present(tmp_path):
    from sg2im_nb.data.shapes import make_shapes_dataset
    shapes, n = tmp_path / 'shapes', torch.cuda.device_count()
    make_shapes_dataset(shapes, num_train=16, num_val=8, num_test=0, image_size=32, seed=0, num_workers=0)
    env = {**os.environ, 'SG2IM_TRAIN_DEBUG_DIR': str(tmp_path / 'dbg')}
    res = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n}',
                          '-m', 'sg2im_nb.train.loop', '--preset', 'tiny', '--device', 'cuda', '--shapes_dir', str(shapes),
                          '--output_dir', str(tmp_path / 'run'), '--num_iterations', '4', '--checkpoint_every', '4'],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    digests = [json.loads((tmp_path / 'dbg' / f'params_rank{r}.json').read_text()) for r in range(n)]
    for net in ('model', 'd_obj', 'd_img'): assert len({d[net]['sha256'] for d in digests}) == 1, net


def test_run_model_on_cuda(tmp_path):
    res = subprocess.run([sys.executable, '-m', 'sg2im_nb.inference', '--scene_graphs_json', 'scene_graphs/shapes_demo.json',
                          '--output_dir', str(tmp_path / 'out'), '--device', 'cuda'], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / 'out' / 'img000000.png').stat().st_size > 0


def test_editor_on_cuda():
    from sg2im_nb.inference import untrained_shapes_model
    from sg2im_nb.editor.widget import SceneGraphEditor
    ed = SceneGraphEditor(untrained_shapes_model('cuda'), {'objects': ['sky'], 'relationships': []}, device='cuda')
    ed._on_msg(ed.widget, {'type': 'actions', 'view': 'v', 'seq': 1, 'actions': [{'op': 'add_object', 'name': 'circle'}]})
    assert ed.scene_graph['objects'] == ['sky', 'circle']
    errors = [t for lv, t in ed.widget.view['messages'] if lv == 'error']
    if shutil.which('dot'): assert not errors, errors
    else: assert errors == ["Graphviz 'dot' not found; install it (apt-get install graphviz / brew install graphviz)"], errors
    assert ed.widget.view['image']  # the image was generated on the GPU, with or without the graph drawing


def test_bench_suite_on_cuda():
    res = subprocess.run([sys.executable, '-m', 'sg2im_nb.reference.bench', '--device', 'cuda', '--config', 'tiny', '--suite',
                          '--iters', '2', '--warmup', '1'], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(l) for l in res.stdout.splitlines() if l.strip()]
    assert rows[0]['amp_used'] == 'none' and all(r['imgs_per_s'] > 0 and r['peak_mb'] > 0 for r in rows)
    assert all(r['machine']['gpu'] for r in rows)


# ------------------------------------------------------------------ static shapes and CUDA graphs (issue 25)
def _noise_fed(nets) -> set:
    "Biases just before a batch norm (true gradient zero: Adam turns rounding noise into full steps) and its running mean."
    out = set()
    for k, m in nets.named().items():
        for name, seq in m.named_modules():
            if isinstance(seq, torch.nn.Sequential):
                for i, (a, c) in enumerate(zip(seq, list(seq)[1:])):
                    if getattr(a, 'bias', None) is not None and isinstance(c, torch.nn.modules.batchnorm._BatchNorm):
                        out |= {f'{k}.{name}.{i}.bias', f'{k}.{name}.{i + 1}.running_mean'}
    return out


def _rel(a, b): return abs(a - b) / max(1.0, abs(b))


def test_cuda_graphs_equal_the_eager_padded_step():
    """StepGraphs (one graph per bucket, recorded after warm-up, the updates inside) against the eager padded step
    from the same start: the same losses at every iteration, over two buckets and a short batch, and the same
    parameters and running statistics at the end. float32 without TF32, no layout noise (a replay draws its noise
    from the graph's own generator offsets)."""
    import copy
    from sg2im_nb.data.common import pad_batch
    from sg2im_nb.train.static import static_nets, static_step_gradients, static_train_step
    from sg2im_nb.train.step import apply_updates, read_losses
    from sg2im_nb.train.graphs import StepGraphs, adopt_optims
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    cfg = make_config('tiny', device='cuda', amp='none', layout_noise_dim=0)
    torch.manual_seed(0)
    eager, _ = build_nets(cfg, VOCAB, 'cuda')
    graphed = copy.deepcopy(eager)
    o_e, o_g = adopt_optims(build_optims(eager, 1e-3), True), adopt_optims(build_optims(graphed, 1e-3), True)
    s_e, s_g = static_nets(eager), static_nets(graphed)
    def step(b):
        losses, ok = static_step_gradients(s_g, b, cfg); apply_updates(s_g, o_g, ok, cfg); return losses, ok
    graphs = StepGraphs(step, 'cuda', images=4, warmup=2)
    plan = [(3, 4), (3, 4), (3, 4), (3, 4), (5, 4), (5, 4), (5, 4), (3, 4), (3, 2), (5, 4), (3, 4)]  # (objects per image, images)
    for i, (k, n) in enumerate(plan):
        b = random_batch(cfg, VOCAB, n, objects_per_image=k, seed=i, device='cpu')
        pb = pad_batch(b, 32 if k == 3 else 40, 48 if k == 3 else 64)
        want = static_train_step(s_e, o_e, pb.to('cuda'), cfg)
        got = read_losses(graphs(pb)[0])
        for name in want: assert _rel(got[name], want[name]) <= 1e-4, (i, name, got[name], want[name])
    assert sorted(graphs.graphs) == [(4, 32, 48, True), (4, 40, 64, True)]
    skip = _noise_fed(eager)
    for (k, a), (_, c) in zip([(f'{n}.{p}', t) for n, m in graphed.named().items() for p, t in [*m.named_parameters(), *m.named_buffers()]],
                              [(f'{n}.{p}', t) for n, m in eager.named().items() for p, t in [*m.named_parameters(), *m.named_buffers()]]):
        if k not in skip: torch.testing.assert_close(a.float(), c.float(), atol=1e-4, rtol=1e-4, msg=k)


def _shapes(tmp_path):
    from sg2im_nb.data.shapes import make_shapes_dataset
    return make_shapes_dataset(tmp_path / 'shapes', num_train=40, num_val=8, num_test=0, image_size=32, seed=0,
                               num_workers=0, progress=False)


def _train(tmp_path, name, *flags):
    from sg2im_nb.train.loop import main
    from sg2im_nb.checkpoint import load_checkpoint
    main(['--preset', 'tiny', '--device', 'cuda', '--amp', 'none', '--shapes_dir', str(tmp_path / 'shapes'), '--layout_noise_dim', '0',
          '--batch_size', '6', '--loader_num_workers', '2', '--print_every', '1', '--checkpoint_every', '5', '--num_iterations', '10',
          '--eval_mode_after', '7', '--output_dir', str(tmp_path / name), *map(str, flags)])
    return load_checkpoint(tmp_path / name / 'checkpoint_with_model.pt')


def test_sg2im_train_cuda_graphs_trains_as_eager_and_resumes(tmp_path):
    """sg2im-train --static_shapes 1 --cuda_graphs 1 against the same run eager (padded and plain): the same losses
    and validation at every iteration, through an epoch's short last batch and the switch to eval mode with its fresh
    Adam (--eval_mode_after 7: every graph recorded again); then stopped at 5 and resumed with graphs: the same run."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    _shapes(tmp_path)
    graphs = _train(tmp_path, 'graphs', '--static_shapes', 1, '--cuda_graphs', 1)
    for name, flags in (('eager_padded', ('--static_shapes', 1)), ('plain', ())):
        other = _train(tmp_path, name, *flags)
        for hist in ('losses', 'd_losses', 'val_losses'):
            for loss, vals in other[hist].items():
                for t, (a, b) in enumerate(zip(graphs[hist][loss], vals)): assert _rel(a, b) <= 1e-3, (name, hist, loss, t, a, b)
    _train(tmp_path, 'resumed', '--static_shapes', 1, '--cuda_graphs', 1, '--num_iterations', 5)
    resumed = _train(tmp_path, 'resumed', '--static_shapes', 1, '--cuda_graphs', 1, '--restore_from_checkpoint', 1)
    assert resumed['counters']['t'] == 10 and resumed['checkpoint_ts'] == graphs['checkpoint_ts'] == [5, 10]
    for loss, vals in graphs['losses'].items():
        for a, b in zip(resumed['losses'][loss], vals): assert _rel(a, b) <= 1e-3, (loss, a, b)
    assert (tmp_path / 'resumed' / 'checkpoint_val_samples.png').is_file()


def test_sg2im_train_cuda_graphs_bf16_and_compile(tmp_path):
    "The fast settings together: bf16, --compile, padded batches replayed as CUDA graphs; finite losses, a checkpoint."
    from sg2im_nb.precision import native_amp
    if not native_amp('cuda')['bf16']: pytest.skip('this GPU has no native bf16')
    _shapes(tmp_path)
    ck = _train(tmp_path, 'fast', '--amp', 'bf16', '--compile', 1, '--static_shapes', 1, '--cuda_graphs', 1)
    assert ck['counters']['t'] == 10 and all(v == v for vals in ck['losses'].values() for v in vals)


def test_bench_static_shapes_and_loop_on_cuda():
    "sg2im-bench rows of issue 25: the padded step as CUDA graphs, and the real loop plain against padded + graphs."
    res = subprocess.run([sys.executable, '-m', 'sg2im_nb.reference.bench', '--device', 'cuda', '--config', 'tiny', '--iters', '3',
                          '--warmup', '2', '--static_shapes', '1', '--cuda_graphs', '1', '--vs', 'static_shapes=0,cuda_graphs=0'],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r['static_shapes'] and r['cuda_graphs'] and r['vs']['static_shapes=0,cuda_graphs=0']['sec_per_step'] > 0
    res = subprocess.run([sys.executable, '-m', 'sg2im_nb.reference.bench', '--device', 'cuda', '--config', 'tiny', '--mode', 'loop',
                          '--iters', '10', '--warmup', '5', '--vs', 'static_shapes=1,cuda_graphs=1'],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r['mode'] == 'loop' and r['vs']['static_shapes=1,cuda_graphs=1']['cuda_graphs'] and r['its_per_s'] > 0
