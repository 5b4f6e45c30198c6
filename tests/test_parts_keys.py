"""The building blocks of sg2im_nb.model.layers / graph / crn load the published state dicts of the golden checkpoints
with strict=True, and the parts that can be run on their own reproduce the published outputs exactly."""
from pathlib import Path
import pytest, torch
import torch.nn.functional as F
from sg2im_nb.model.layers import build_mlp, build_cnn, published_activation
from sg2im_nb.model.graph import GraphTripleConv, GraphTripleConvNet
from sg2im_nb.model.crn import RefinementNetwork

DATA = Path(__file__).parent / 'data'

# name -> (embedding dim, gconv dim, hidden, mlp norm, crn dims, norm, act)
CONFIGS = {'coco_masks': (16, 32, 48, 'none', (32, 64, 32, 16, 8), 'batch', 'leakyrelu-0.2'),
           'vg_boxes':   (16, 24, 40, 'batch', (24, 48, 24, 12, 8), 'instance', 'relu')}

@pytest.fixture(scope='module', params=list(CONFIGS))
def golden(request):
    ckpt = torch.load(DATA / f'{request.param}_checkpoint.pt', weights_only=False)
    io = torch.load(DATA / f'{request.param}_io.pt', weights_only=True)
    return request.param, ckpt, io

def _sub(state:dict, prefix:str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

def _parts(name, ckpt, act=None):
    emb, D, H, mlp_norm, dims, norm, kw_act = CONFIGS[name]
    kw = ckpt['model_kwargs']
    assert (kw['gconv_dim'], kw['gconv_hidden_dim'], kw['mlp_normalization'], kw['normalization'], kw['activation']) \
        == (D, H, mlp_norm, norm, kw_act)
    parts = {'gconv.': GraphTripleConv(emb, output_dim=D, hidden_dim=H, pooling='avg', mlp_normalization=mlp_norm),
             'gconv_net.': GraphTripleConvNet(D, num_layers=kw['gconv_num_layers'] - 1, hidden_dim=H, pooling='avg',
                                              mlp_normalization=mlp_norm),
             'box_net.': build_mlp([D, H, 4], batch_norm=mlp_norm),
             'refinement_net.': RefinementNetwork(dims, norm, act or kw_act)}
    for prefix, module in parts.items(): module.load_state_dict(_sub(ckpt['model_state'], prefix), strict=True)
    return {k: m.eval() for k, m in parts.items()}

def _maxerr(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()

def test_strict_loads(golden):
    name, ckpt, io = golden
    for prefix, module in _parts(name, ckpt).items():
        assert list(module.state_dict()) == list(_sub(ckpt['model_state'], prefix))

def _obj_vecs(parts, ckpt, inp):
    state = ckpt['model_state']
    obj_vecs = F.embedding(inp['objs'], state['obj_embeddings.weight'])
    pred_vecs = F.embedding(inp['triples'][:, 1], state['pred_embeddings.weight'])
    edges = inp['triples'][:, [0, 2]]
    with torch.no_grad():
        obj_vecs, pred_vecs = parts['gconv.'](obj_vecs, pred_vecs, edges)
        return parts['gconv_net.'](obj_vecs, pred_vecs, edges)[0]

def test_boxes_pred_match(golden):
    "embeddings -> gconv -> gconv_net -> box_net is exactly the published box prediction."
    name, ckpt, io = golden
    parts = _parts(name, ckpt)
    with torch.no_grad(): boxes = parts['box_net.'](_obj_vecs(parts, ckpt, io['inputs']))
    assert _maxerr(boxes, io['outputs']['pred']['boxes_pred']) < 1e-5

def _layout(vecs, boxes, masks, obj_to_img, H, W):
    "Minimal published-style layout (test helper only): vectors x masks (or 8x8 ones) sampled into their boxes."
    O, D = vecs.shape
    b = boxes.view(O, 4, 1, 1)
    X = (torch.linspace(0, 1, W).view(1, 1, W) - b[:, 0]) / (b[:, 2] - b[:, 0])
    Y = (torch.linspace(0, 1, H).view(1, H, 1) - b[:, 1]) / (b[:, 3] - b[:, 1])
    grid = torch.stack([X.expand(O, H, W), Y.expand(O, H, W)], dim=3) * 2 - 1
    img_in = vecs.view(O, D, 1, 1).expand(O, D, 8, 8) if masks is None else vecs.view(O, D, 1, 1) * masks[:, None]
    sampled = F.grid_sample(img_in, grid, align_corners=True)
    return torch.zeros(int(obj_to_img.max()) + 1, D, H, W).index_add_(0, obj_to_img, sampled)

def test_refinement_network_match(golden):
    "With the ground-truth layout, the CRN reproduces the published images (with the published activation slip)."
    name, ckpt, io = golden
    kw, inp = ckpt['model_kwargs'], io['inputs']
    parts = _parts(name, ckpt, act=published_activation(kw['activation']))
    variant = 'gt_boxes_gt_masks' if 'masks' in inp else 'gt_boxes'
    layout = _layout(_obj_vecs(parts, ckpt, inp), inp['boxes'], inp.get('masks'), inp['obj_to_img'], *kw['image_size'])
    with torch.no_grad(): imgs = parts['refinement_net.'](layout)
    assert _maxerr(imgs, io['outputs'][variant]['imgs']) < 1e-4

def test_discriminator_cnns(golden):
    "The discriminators' conv stacks load strictly; the patch discriminator's output is exactly the published one."
    name, ckpt, io = golden
    kw = ckpt['d_img_kwargs']
    cnn, _ = build_cnn(kw['arch'], kw['normalization'], published_activation(kw['activation']), kw['padding'])
    cnn.load_state_dict(_sub(ckpt['d_img_state'], 'cnn.'), strict=True)
    okw = ckpt['d_obj_kwargs']
    ocnn, _ = build_cnn(okw['arch'], okw['normalization'], published_activation(okw['activation']), okw['padding'])
    ocnn.load_state_dict(_sub(ckpt['d_obj_state'], 'discriminator.cnn.0.'), strict=True)
    with torch.no_grad(): scores = cnn.eval()(io['inputs']['real_imgs'])
    assert _maxerr(scores, io['outputs']['d_img_scores']) < 1e-5
