"""The training step and generation never make the host wait for the device: run under `HostSyncs` (a
TorchDispatchMode recording aten._local_scalar_dense, nonzero, boolean-mask indexing, value-dependent shapes and
device-to-host copies, plus a TorchFunctionMode for .tolist()/.numpy()), they record nothing. What CUDA graphs need,
checked on the CPU."""
import dataclasses
import pytest, torch
from sg2im_nb.train.config import make_config
from sg2im_nb.train.step import build_nets, build_optims, train_step, read_losses
from sg2im_nb.reference.published import published_train_step
from sg2im_nb.train.engineering import HostSyncs
from sg2im_nb.reference.bench import bench_vocab, random_batch

VOCAB = bench_vocab()


def test_recorder_sees_every_kind_of_sync():
    "The recorder is only worth something if it catches the real thing."
    x = torch.randn(6)
    reads = [lambda: x.sum().item(), lambda: bool(x[0] > 0), lambda: int(x.argmax()), lambda: float(x.max()),
             lambda: x.tolist(), lambda: x.numpy(), lambda: x[x > 0], lambda: x.nonzero(), lambda: torch.bincount(x.long().abs()),
             lambda: torch.equal(x, x), lambda: x.unique(), lambda: torch.masked_select(x, x > 0),
             lambda: x.repeat_interleave(torch.tensor([1, 2, 1, 0, 1, 1]))]
    for read in reads:
        with HostSyncs() as s: read()
        assert s.events, read
    with HostSyncs() as s:
        torch.where(x > 0, x, 0) * 2; x[torch.tensor([0, 3])]; x.repeat_interleave(2); torch.isfinite(x).all()
    assert s.events == []


CONFIGS = {'tiny': {}, 'no_mask_loss': dict(mask_loss_weight=0), 'wgan_clip': dict(gan_loss_type='wgan', d_clip=0.05),
           'predicate_loss': dict(predicate_pred_loss_weight=0.5), 'no_discriminators': dict(discriminator_loss_weight=0)}


@pytest.mark.parametrize('name', list(CONFIGS))
def test_train_step_is_sync_free(name):
    cfg = make_config('tiny', amp='none', **CONFIGS[name])
    batch = random_batch(cfg, VOCAB, 2, objects_per_image=3)
    torch.manual_seed(0)
    nets, _ = build_nets(cfg, VOCAB)
    optims = build_optims(nets, 1e-3)
    train_step(nets, optims, batch, cfg)  # the first step creates the optimizers' state
    with HostSyncs() as s: losses = train_step(nets, optims, batch, cfg, as_floats=False)
    assert s.events == [], s.events
    vals = read_losses(losses)  # after the step: one read
    assert 'total_loss' in vals and all(v == v for v in vals.values())


def test_skipped_step_is_sync_free_too():
    "A non-finite loss skips the updates on the device, without a sync, and leaves every parameter as it was."
    cfg = make_config('tiny', amp='none')
    batch = random_batch(cfg, VOCAB, 2, objects_per_image=3)
    bad = dataclasses.replace(batch, imgs=batch.imgs.clone())
    bad.imgs[0, 0, 0, 0] = float('nan')
    nets, _ = build_nets(cfg, VOCAB)
    optims = build_optims(nets, 1e-3)
    train_step(nets, optims, batch, cfg)
    before = [p.detach().clone() for m in nets.named().values() for p in m.parameters()]
    with HostSyncs() as s: losses = train_step(nets, optims, bad, cfg, as_floats=False)
    assert s.events == []
    after = [p for m in nets.named().values() for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert list(read_losses(losses))[-1] == 'total_loss'


def test_generation_is_sync_free():
    cfg = make_config('tiny', amp='none')
    model = build_nets(cfg, VOCAB)[0].model.eval()
    batch = random_batch(cfg, VOCAB, 3, objects_per_image=4)
    with torch.no_grad(), HostSyncs() as s:
        model(batch.objs, batch.triples, batch.obj_to_img, num_images=3)  # predicted boxes and masks
        model(batch.objs, batch.triples, batch.obj_to_img, boxes_gt=batch.boxes, masks_gt=batch.masks, num_images=3)
    assert s.events == []
    with torch.no_grad(), HostSyncs() as s: model(batch.objs, batch.triples, batch.obj_to_img)  # N found on the device
    assert s.events == ['aten._local_scalar_dense.default']


def test_published_loop_waits_on_every_loss():
    "The transcription of the published loop, for contrast: at least one read per reported loss."
    cfg = make_config('tiny', amp='none')
    batch = random_batch(cfg, VOCAB, 2, objects_per_image=3)
    nets, _ = build_nets(cfg, VOCAB)
    with HostSyncs() as s: losses = published_train_step(nets, build_optims(nets, 1e-3), batch, cfg)
    assert sum(e.startswith('aten._local_scalar_dense') for e in s.events) >= len(losses)


@pytest.mark.parametrize('name', ['tiny', 'predicate_loss', 'wgan_clip'])
def test_static_step_is_sync_free(name):
    "The padded step (--static_shapes 1) waits on the device nowhere either: what CUDA graphs need."
    from sg2im_nb.data.common import pad_batch
    from sg2im_nb.train.static import static_nets, static_train_step
    cfg = make_config('tiny', amp='none', **CONFIGS[name])
    pb = pad_batch(random_batch(cfg, VOCAB, 2, objects_per_image=3), 12, 16)
    torch.manual_seed(0)
    nets, _ = build_nets(cfg, VOCAB)
    snets, optims = static_nets(nets), build_optims(nets, 1e-3)
    static_train_step(snets, optims, pb, cfg)
    with HostSyncs() as s: losses = static_train_step(snets, optims, pb, cfg, as_floats=False)
    assert s.events == [], s.events
    assert all(v == v for v in read_losses(losses).values())
