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
