"""The discriminators and GAN losses reproduce the published sg2im: the golden checkpoints' discriminator states load
with strict=True, and the stored outputs (every network in eval mode) match within 1e-5."""
from pathlib import Path
import pytest, torch
from sg2im_nb.model.discriminators import PatchDiscriminator, AcCropDiscriminator, crop_bbox_batch
from sg2im_nb.train.losses import get_gan_losses
from sg2im_nb.model.layout import boxes_to_layout, masks_to_layout

DATA = Path(__file__).parent / 'data'
NAMES = ['coco_masks', 'vg_boxes']

def _close(got, want, atol=1e-5):
    assert got.shape == want.shape, (got.shape, want.shape)
    err = (got.double() - want.double()).abs().max().item()
    assert err <= atol, f'max abs error {err:.3g} > {atol}'

@pytest.fixture(scope='module', params=NAMES)
def golden(request):
    ckpt = torch.load(DATA / f'{request.param}_checkpoint.pt', weights_only=False)  # test data we ship
    io = torch.load(DATA / f'{request.param}_io.pt', weights_only=True)
    return request.param, ckpt, io

def _discriminators(ckpt):
    d_img = PatchDiscriminator(**ckpt['d_img_kwargs'])
    d_img.load_state_dict(ckpt['d_img_state'], strict=True)
    d_obj = AcCropDiscriminator(**ckpt['d_obj_kwargs'])
    d_obj.load_state_dict(ckpt['d_obj_state'], strict=True)
    return d_img.eval(), d_obj.eval()

def test_state_dict_keys(golden):
    name, ckpt, io = golden
    d_img, d_obj = _discriminators(ckpt)
    assert list(d_img.state_dict()) == list(ckpt['d_img_state'])
    assert list(d_obj.state_dict()) == list(ckpt['d_obj_state'])

def test_d_img_scores(golden):
    name, ckpt, io = golden
    d_img, _ = _discriminators(ckpt)
    with torch.no_grad(): scores = d_img(io['inputs']['real_imgs'])
    _close(scores, io['outputs']['d_img_scores'])

def test_d_obj_scores_and_ac_loss(golden):
    name, ckpt, io = golden
    _, d_obj = _discriminators(ckpt)
    inp = io['inputs']
    with torch.no_grad(): scores, ac_loss = d_obj(inp['real_imgs'], inp['objs'], inp['boxes'], inp['obj_to_img'])
    _close(scores, io['outputs']['d_obj_scores'])
    _close(ac_loss, io['outputs']['d_obj_ac_loss'])

@pytest.mark.parametrize('gan_type', ['gan', 'lsgan', 'wgan'])
def test_gan_losses(golden, gan_type):
    name, ckpt, io = golden
    g_loss, d_loss = get_gan_losses(gan_type)
    real, fake = io['inputs']['scores_real'], io['inputs']['scores_fake']
    _close(g_loss(fake), io['outputs'][f'{gan_type}_g_loss'])
    _close(d_loss(real, fake), io['outputs'][f'{gan_type}_d_loss'])

def test_crops_do_not_depend_on_object_order(golden):
    "Shuffling the objects (and their images) shuffles the crops and nothing else."
    name, ckpt, io = golden
    inp = io['inputs']
    perm = torch.randperm(len(inp['objs']), generator=torch.Generator().manual_seed(0))
    a = crop_bbox_batch(inp['real_imgs'], inp['boxes'], inp['obj_to_img'], 8)
    b = crop_bbox_batch(inp['real_imgs'], inp['boxes'][perm], inp['obj_to_img'][perm], 8)
    _close(b, a[perm], 0)

def test_layout_shapes_on_golden_inputs(golden):
    "The golden inputs (boxes partly outside the image for vg_boxes) give finite layouts of the right shape."
    name, ckpt, io = golden
    inp = io['inputs']
    vecs = torch.randn(len(inp['objs']), 6, generator=torch.Generator().manual_seed(0))
    out = boxes_to_layout(vecs, inp['boxes'], inp['obj_to_img'], 16, num_images=3)
    assert out.shape == (3, 6, 16, 16) and out.isfinite().all()
    if 'masks' in inp:
        out = masks_to_layout(vecs, inp['boxes'], inp['masks'], inp['obj_to_img'], 16, 8, pooling='avg')
        assert out.shape == (3, 6, 16, 8) and out.isfinite().all()
