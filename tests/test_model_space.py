"""Equivalence beyond the two golden configurations: a plain reference forward pass, written the way the published
code computes it (a Python loop over triples for graph convolution, the O x D x H x W layout tensor), must match
Sg2ImModel over a sweep of the parameter space: pooling sum/avg, 0/1/3 graph-conv layers, boxes only and several
mask sizes, non-square images, normalizations, layout noise."""
import pytest, torch
import torch.nn.functional as F
from sg2im_nb.scene_graph import make_vocab
from sg2im_nb.model.generator import Sg2ImModel

VOCAB = make_vocab(['__image__', 'a', 'b', 'c', 'd', 'e'], ['__in_image__', 'p', 'q', 'r'])

def ref_gconv(layer, obj_vecs, pred_vecs, edges):
    "One graph-conv layer, one triple at a time."
    H = layer.net2[0].in_features
    O = obj_vecs.size(0)
    pooled = torch.zeros(O, H, dtype=obj_vecs.dtype)
    counts = torch.zeros(O, dtype=obj_vecs.dtype)
    new_p = []
    for t in range(edges.size(0)):
        s, o = edges[t].tolist()
        out = layer.net1(torch.cat([obj_vecs[s], pred_vecs[t], obj_vecs[o]])[None])[0]
        Dp = out.numel() - 2 * H
        pooled[s] += out[:H]; pooled[o] += out[H + Dp:]
        counts[s] += 1; counts[o] += 1
        new_p.append(out[H:H + Dp])
    if layer.pooling == 'avg': pooled = pooled / counts.clamp(min=1)[:, None]
    return layer.net2(pooled), torch.stack(new_p)

def ref_grid(boxes, H, W):
    O = boxes.size(0)
    x0, y0, x1, y1 = [boxes[:, i].view(O, 1, 1) for i in range(4)]
    # the one intended difference from the published code: zero-size boxes (an untrained box net predicts them)
    # get size 1e-6 instead of dividing by zero and turning the whole image into NaN
    nz = lambda v: torch.where(v == 0, torch.full_like(v, 1e-6), v)
    X = ((torch.linspace(0, 1, W, dtype=boxes.dtype).view(1, 1, W) - x0) / nz(x1 - x0)).expand(O, H, W)
    Y = ((torch.linspace(0, 1, H, dtype=boxes.dtype).view(1, H, 1) - y0) / nz(y1 - y0)).expand(O, H, W)
    return torch.stack([X, Y], dim=3) * 2 - 1

def ref_layout(vecs, boxes, masks, obj_to_img, H, W):
    "The published construction: every object's D channels sampled at full image size, then summed per image."
    O, D = vecs.shape
    img_in = vecs.view(O, D, 1, 1).expand(O, D, 8, 8) if masks is None else vecs.view(O, D, 1, 1) * masks[:, None]
    sampled = F.grid_sample(img_in, ref_grid(boxes, H, W), align_corners=True)
    N = int(obj_to_img.max()) + 1
    return torch.stack([sampled[obj_to_img == n].sum(0) for n in range(N)])

def ref_forward(m, objs, triples, obj_to_img, boxes_gt=None):
    s, p, o = triples.unbind(1)
    edges = torch.stack([s, o], 1)
    vecs = orig = m.obj_embeddings(objs)
    pv = m.pred_embeddings(p)
    if isinstance(m.gconv, torch.nn.Linear): vecs = m.gconv(vecs)
    else: vecs, pv = ref_gconv(m.gconv, vecs, pv, edges)
    if m.gconv_net is not None:
        for layer in m.gconv_net.gconvs: vecs, pv = ref_gconv(layer, vecs, pv, edges)
    boxes = m.box_net(vecs)
    masks = m.mask_net(vecs[:, :, None, None]).squeeze(1).sigmoid() if m.mask_net is not None else None
    rel = m.rel_aux_net(torch.cat([boxes[s], boxes[o], orig[s], orig[o]], 1))
    H, W = m.image_size
    layout = ref_layout(vecs, boxes if boxes_gt is None else boxes_gt, masks, obj_to_img, H, W)
    if m.layout_noise_dim:
        layout = torch.cat([layout, torch.randn(layout.size(0), m.layout_noise_dim, H, W, dtype=layout.dtype)], 1)
    return m.refinement_net(layout), boxes, masks, rel

def random_graphs(n_imgs, gen):
    objs, triples, o2i, off = [], [], [], 0
    for i in range(n_imgs):
        k = int(torch.randint(1, 5, (1,), generator=gen))
        objs += torch.randint(1, 6, (k,), generator=gen).tolist() + [0]
        o2i += [i] * (k + 1)
        for _ in range(int(torch.randint(0, 4, (1,), generator=gen))):
            a, b = torch.randint(0, k, (2,), generator=gen).tolist()
            triples.append([a + off, int(torch.randint(1, 4, (1,), generator=gen)), b + off])
        triples += [[j + off, 0, k + off] for j in range(k)]
        off += k + 1
    t = lambda x: torch.tensor(x, dtype=torch.long)
    return t(objs), t(triples).view(-1, 3), t(o2i)

CONFIGS = [dict(gconv_pooling=pool, gconv_num_layers=nl, mask_size=ms, image_size=size, normalization=norm,
                mlp_normalization=mlpn, layout_noise_dim=noise)
           for pool, nl, ms, size, norm, mlpn, noise in [
               ('sum', 0, 0, (16, 32), 'batch', 'none', 0),
               ('avg', 1, 4, (32, 16), 'instance', 'batch', 0),
               ('sum', 3, 16, (32, 32), 'none', 'none', 3),
               ('avg', 3, 8, (16, 48), 'batch', 'batch', 2),
               ('sum', 1, 0, (24, 8), 'instance', 'none', 0),
           ]]

@pytest.mark.parametrize('cfg', CONFIGS, ids=lambda c: f"{c['gconv_pooling']}-L{c['gconv_num_layers']}-M{c['mask_size']}-{c['image_size'][0]}x{c['image_size'][1]}")
def test_model_matches_reference(cfg):
    torch.manual_seed(0)
    m = Sg2ImModel(VOCAB, embedding_dim=8, gconv_dim=12, gconv_hidden_dim=16, activation='leakyrelu-0.2',
                   refinement_dims=(16, 8, 8) if cfg['image_size'] != (24, 8) else (8, 8, 4), **cfg).double()
    # random BatchNorm statistics so eval mode is not the identity
    for mod in m.modules():
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            mod.running_mean.uniform_(-.5, .5); mod.running_var.uniform_(.5, 2)
    m.eval()
    gen = torch.Generator().manual_seed(1)
    objs, triples, o2i = random_graphs(3, gen)
    boxes_gt = torch.rand(len(objs), 2, 2, generator=gen, dtype=torch.double).sort(dim=1).values.transpose(1, 2).reshape(-1, 4)
    boxes_gt = boxes_gt * 1.2 - .1  # some boxes reach outside the image
    for gt in (None, boxes_gt):
        with torch.no_grad():
            torch.manual_seed(5); want = ref_forward(m, objs, triples, o2i, gt)
            torch.manual_seed(5); got = m(objs, triples, o2i, boxes_gt=gt)
        for a, b in zip(got, want):
            if b is None: assert a is None
            else: torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)
