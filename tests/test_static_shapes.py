"""`--static_shapes 1` computes the same training as the plain step (issue 25 item 1): for every loss and
normalisation option, several iterations of the padded step (`sg2im_nb.train.static`) against the plain one from the
same start, on batches of other sizes padded by other amounts: the losses within 1e-4 relative and every gradient
after each backward pass, every parameter and running statistic after the updates. Then the real `sg2im-train`
loop both ways (and a resume), the buckets against the data (COCO-style shapes and Visual Genome), and the one-line
refusals of `--cuda_graphs 1` on a CPU."""
import copy, dataclasses, json, subprocess, sys
from pathlib import Path
import pytest, torch
from sg2im_nb.checkpoint import load_checkpoint
from sg2im_nb.data.common import pad_batch, collate_scene_graphs
from sg2im_nb.data.shapes import make_shapes_dataset
from sg2im_nb.data.vg import VgSceneGraphDataset
from sg2im_nb.train.config import make_config
from sg2im_nb.train.step import build_nets, build_optims, step_gradients, apply_updates
from sg2im_nb.train.static import static_nets, static_step_gradients, graph_sizes, make_buckets, static_loader
from sg2im_nb.train.data import build_datasets, make_loader
from sg2im_nb.train.loop import main as train_main
from sg2im_nb.reference.bench import bench_vocab, random_batch

VOCAB, REPO = bench_vocab(), Path(__file__).resolve().parent.parent

CONFIGS = {
    'tiny': {},  # masks with the mask loss, batch norms in the mask net and both discriminators, gan
    'mlp_batch_norm_lsgan': dict(mlp_normalization='batch', gan_loss_type='lsgan'),
    'wgan_clip_predicates': dict(gan_loss_type='wgan', d_clip=0.05, predicate_pred_loss_weight=0.5),
    'no_mask_loss': dict(mask_loss_weight=0),  # the mask net only updates its running statistics
    'boxes_only': dict(mask_size=0, mask_loss_weight=0, d_normalization='none'),
    'no_discriminators': dict(discriminator_loss_weight=0),
    'no_graph_convolution': dict(gconv_num_layers=0, mlp_normalization='batch'),
}


def _flat_grads(nets):
    return torch.cat([p.grad.flatten() for m in nets.named().values() for p in m.parameters() if p.grad is not None])


def _noise_fed(nets) -> set:
    """The biases just before a batch norm (true gradient zero: both steps compute rounding noise there, which Adam
    scales up to full steps) and that batch norm's running mean, which they shift; the losses see neither."""
    out = set()
    for k, m in nets.named().items():
        for name, seq in m.named_modules():
            if isinstance(seq, torch.nn.Sequential):
                for i, (a, c) in enumerate(zip(seq, list(seq)[1:])):
                    if getattr(a, 'bias', None) is not None and isinstance(c, torch.nn.modules.batchnorm._BatchNorm):
                        out |= {f'{k}.{name}.{i}.bias', f'{k}.{name}.{i + 1}.running_mean'}
    return out


def _entries(nets):
    return {f'{k}.{n}': t.detach().float() for k, m in nets.named().items() for n, t in [*m.named_parameters(), *m.named_buffers()]}


def _close(got, want, what, rtol=1e-4):
    err = ((got.double() - want.double()).abs() / want.double().abs().clamp(min=1)).max().item()
    assert err <= rtol, f'{what}: relative error {err:.2e}'


@pytest.mark.parametrize('name', list(CONFIGS))
def test_static_step_is_the_plain_step(name):
    cfg = make_config('tiny', amp='none', **CONFIGS[name])
    torch.manual_seed(0)
    plain, _ = build_nets(cfg, VOCAB)
    padded = copy.deepcopy(plain)
    if name == 'no_mask_loss': plain.model.eval(), padded.model.eval()  # and the generator in eval mode
    o_plain, o_pad, s_pad = build_optims(plain, 1e-3), build_optims(padded, 1e-3), static_nets(padded)
    for i, (k, extra_o, extra_t) in enumerate(((4, 3, 7), (6, 0, 2), (3, 9, 0), (5, 1, 11))):
        b = random_batch(cfg, VOCAB, 3, objects_per_image=k, seed=i)
        p = pad_batch(b, len(b.objs) + extra_o, len(b.triples) + extra_t)
        torch.manual_seed(i); want, ok_w = step_gradients(plain, b, cfg)
        torch.manual_seed(i); got, ok_g = static_step_gradients(s_pad, p, cfg)
        assert list(got) == list(want) and bool(ok_w) and bool(ok_g)
        for loss in want: _close(got[loss], want[loss], f'iteration {i + 1}: {loss}')
        _close(_flat_grads(padded), _flat_grads(plain), f'iteration {i + 1}: gradients')
        apply_updates(plain, o_plain, ok_w, cfg); apply_updates(s_pad, o_pad, ok_g, cfg)
    got, want, skip = _entries(padded), _entries(plain), _noise_fed(plain)
    assert got.keys() == want.keys()
    for k in want.keys() - skip: _close(got[k], want[k], k)


def test_static_step_skips_a_nonfinite_iteration():
    "A NaN in the real data skips every update (parameters as they were, as in the plain step); padding never trips it."
    cfg = make_config('tiny', amp='none')
    b = random_batch(cfg, VOCAB, 2, objects_per_image=3)
    bad = dataclasses.replace(b, imgs=b.imgs.clone()); bad.imgs[0, 0, 0, 0] = float('nan')
    nets, _ = build_nets(cfg, VOCAB)
    plain = copy.deepcopy(nets)
    before = {k: v.clone() for k, v in _entries(nets).items()}
    s = static_nets(nets)
    torch.manual_seed(0); losses, ok = static_step_gradients(s, pad_batch(bad, 12, 16), cfg)
    apply_updates(s, build_optims(nets, 1e-3), ok, cfg)
    torch.manual_seed(0); _, ok_plain = step_gradients(plain, bad, cfg)
    apply_updates(plain, build_optims(plain, 1e-3), ok_plain, cfg)
    assert not bool(ok) and not bool(ok_plain)
    for k, p in nets.named().items():
        for n, v in p.named_parameters(): assert torch.equal(v, before[f'{k}.{n}']), n
    want = _entries(plain)
    for k, v in _entries(nets).items(): _close(v, want[k], k)  # the generator's running statistics moved alike
    _, ok = static_step_gradients(s, pad_batch(b, 12, 16), cfg)
    assert bool(ok)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp('shapes') / 'ds', num_train=40, num_val=8, num_test=4, image_size=32,
                               seed=0, num_workers=0, progress=False)


def _train(argv, capsys):
    train_main(argv)
    return capsys.readouterr()


def test_sg2im_train_static_shapes_trains_the_same(shapes, tmp_path, capsys):
    "The real loop with --static_shapes 1: the losses and validation of the plain loop; a resume continues it."
    common = ['--preset', 'tiny', '--device', 'cpu', '--amp', 'none', '--shapes_dir', str(shapes), '--print_every', '1',
              '--batch_size', '6', '--checkpoint_every', '4', '--num_iterations', '8']
    _train(common + ['--output_dir', str(tmp_path / 'plain')], capsys)
    said = _train(common + ['--output_dir', str(tmp_path / 'static'), '--static_shapes', '1'], capsys)
    assert 'static shapes: objects padded to (' in said.out
    ck = {k: load_checkpoint(tmp_path / k / 'checkpoint_with_model.pt') for k in ('plain', 'static')}
    for hist in ('losses', 'd_losses', 'val_losses'):
        for loss, vals in ck['plain'][hist].items():
            _close(torch.tensor(ck['static'][hist][loss]), torch.tensor(vals), f'{hist} {loss}')
    assert ck['static']['losses_ts'] == ck['plain']['losses_ts'] == list(range(1, 9))
    _train(common[:-2] + ['--num_iterations', '4', '--output_dir', str(tmp_path / 'resumed'), '--static_shapes', '1'], capsys)
    _train(common + ['--output_dir', str(tmp_path / 'resumed'), '--static_shapes', '1', '--restore_from_checkpoint', '1'], capsys)
    resumed = load_checkpoint(tmp_path / 'resumed' / 'checkpoint_with_model.pt')
    for loss, vals in ck['static']['losses'].items():
        _close(torch.tensor(resumed['losses'][loss]), torch.tensor(vals), f'resumed {loss}')
    assert (tmp_path / 'static' / 'checkpoint_val_samples.png').is_file()


def _one_line_error(res, contains):
    assert res.returncode == 2, res.stderr
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: ') and contains in lines[0] and 'Traceback' not in res.stderr, res.stderr


@pytest.mark.parametrize('flags, contains', [(['--cuda_graphs', '1'], '--cuda_graphs 1 needs a CUDA device'),
                                             (['--cuda_graphs', '1', '--static_shapes', '1'], '--cuda_graphs 1 needs a CUDA device'),
                                             (['--static_shapes', '1', '--static_buckets', '0'], '--static_buckets 0 is out of range')])
def test_refused_in_one_line_before_any_work(tmp_path, flags, contains):
    out = tmp_path / 'run'
    res = subprocess.run([sys.executable, '-m', 'sg2im_nb.train.loop', '--preset', 'tiny', '--device', 'cpu',
                          '--shapes_dir', str(tmp_path / 'no_shapes'), '--output_dir', str(out), *flags],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    _one_line_error(res, contains)
    assert not out.exists() and not (tmp_path / 'no_shapes').exists()  # nothing made, nothing generated


def test_buckets_fit_the_coco_style_data(shapes):
    cfg = make_config('tiny', amp='none', shapes_dir=str(shapes), batch_size=6)
    _, train, _ = build_datasets(cfg)
    objs, triples = graph_sizes(train)
    samples = [train[i] for i in range(len(train))]
    assert objs.tolist() == [len(s.objs) for s in samples] and triples.tolist() == [len(s.triples) for s in samples]
    buckets = make_buckets(train, 6)
    assert all(s % 8 == 0 for s in buckets.objects + buckets.triples) and len(buckets.objects) <= 4
    assert buckets.objects[-1] >= sum(sorted(objs)[-6:]) and buckets.triples[-1] >= sum(sorted(triples)[-6:])  # every batch fits
    plain = list(make_loader(train, cfg, shuffle=True, seed=1))
    padded = list(static_loader(train, cfg, buckets, shuffle=True, seed=1))
    assert len(plain) == len(padded) == 7  # 40 images, batches of 6: the last one short
    for a, c in zip(padded, plain):
        assert len(a.objs) in buckets.objects and len(a.triples) in buckets.triples
        for f in ('objs', 'boxes', 'masks', 'obj_to_img'): assert torch.equal(getattr(a, f)[a.obj_mask], getattr(c, f))
        for f in ('triples', 'triple_to_img'): assert torch.equal(getattr(a, f)[a.triple_mask], getattr(c, f))
        assert torch.equal(a.imgs, c.imgs)


def test_buckets_bound_visual_genome(shapes, tmp_path):
    "Visual Genome samples its objects at random: the sizes read from the h5 file bound every sample, every epoch."
    vg, out = shapes / 'vg', tmp_path / 'vg'
    flags = dict(splits_json=vg / 'splits.json', images_json=vg / 'image_data.json', objects_json=vg / 'objects.json',
                 attributes_json=vg / 'attributes.json', object_aliases=vg / 'object_alias.txt',
                 relationship_aliases=vg / 'relationship_alias.txt', relationships_json=vg / 'relationships.json',
                 output_vocab_json=out / 'vocab.json', output_h5_dir=out, min_image_size=32, min_object_instances=2,
                 min_attribute_instances=2, min_object_size=4, min_relationship_instances=2, min_objects_per_image=1)
    res = subprocess.run([sys.executable, '-m', 'sg2im_nb.data.vg_preprocess', *[x for k, v in flags.items() for x in (f'--{k}', str(v))]],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ds = VgSceneGraphDataset(json.loads((out / 'vocab.json').read_text()), out / 'train.h5', shapes / 'images',
                             image_size=(32, 32), max_objects=4, seed=0)
    objs, triples = graph_sizes(ds)
    assert objs.max() <= 4
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            assert len(s.objs) <= objs[i] and len(s.triples) <= triples[i], (epoch, i)
    buckets = make_buckets(ds, 4)
    batch = buckets([ds[i] for i in range(4)])
    assert len(batch.objs) in buckets.objects and torch.equal(batch.objs[batch.obj_mask], collate_scene_graphs([ds[i] for i in range(4)]).objs)
